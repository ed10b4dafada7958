"""The model interface evalkit's suites and judges talk to, and its implementations.

``EvalModel`` is an abstract base. Every model answers user prompts (``generate``); what else it can
do it declares in ``capabilities`` (names from ``CAPABILITIES``), and a suite that needs more calls
``model.require("suite 'probes'", "hidden_states")`` first, which fails with a message naming the
suite, the missing capabilities and the backend that has them:

* ``generate``: user prompts, formatted by the model (chat template or raw text), answered;
* ``complete``: raw text continued as it is (an LLM judge's own prompt template);
* ``chat``: conversations (lists of ``{"role", "content"}``) rendered with the chat template;
* ``loglikelihood``: log-probability of continuations after contexts;
* ``next_token_logprobs``: incremental decoding (``encode_prompt``, ``start``, ``step``, ``decode``,
  ``tag_token_id``, ``eos_token_id``), which decoders such as SafeBeam build on;
* ``hidden_states``: residual-stream activations, every layer;
* ``steer``: add a vector to the residual stream while generating;
* ``edit_weights``: ``output_projections()`` edited in place (abliteration) and ``save``.

``HFModel`` (transformers, in process) has them all; ``OpenAIModel`` (any OpenAI-compatible server)
has generate, complete and chat; ``evalkit.dummy.DummyModel`` is a weightless test double with all.

Decoding modes other than greedy and sample are decoders in ``DECODERS`` (SafeBeam registers
``safebeam`` from ``evalkit.safebeam``); ``generate`` of any model runs them through ``EvalModel.decode_with``.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.log import get_logger, progress
from infra.registry import Registry

log = get_logger(__name__)

CAPABILITIES = (
    "generate",
    "complete",
    "chat",
    "loglikelihood",
    "next_token_logprobs",
    "hidden_states",
    "steer",
    "edit_weights",
)
DUMMY_FILE = "dummy_model.json"  # marks a folder holding an evalkit.dummy.DummyModel config
SERVER_CAPABILITIES = frozenset({"generate", "complete", "chat"})
NATIVE_MODES = ("greedy", "sample")


class ModelError(RuntimeError):
    """A model that cannot be loaded or cannot do what a suite asks."""


@dataclass
class Generation:
    """One answer. ``error`` is set (and ``text`` empty) when the backend failed on this request."""

    prompt: str
    text: str
    new_tokens: int
    error: str = ""


@dataclass(frozen=True)
class Decoder:
    """A decoding mode run by ``EvalModel.decode_with``: ``fn(model, prompt, decoding) -> Generation``
    for each user prompt; ``needs``: the capabilities it uses."""

    fn: Callable
    needs: tuple[str, ...]


# decoding modes beyond greedy/sample; the built-in module registers on first read (no import cycle)
DECODERS = Registry("evalkit decoding mode", builtins=("evalkit.safebeam",))


def register_decoder(mode: str, *needs: str):
    """``@register_decoder("safebeam", "next_token_logprobs")`` above ``fn(model, prompt, decoding)``."""

    def add(fn):
        DECODERS.register(mode, Decoder(fn, tuple(needs)))
        return fn

    return add


def resolve_model_dir(path: str | Path, work_dir: Path | None = None) -> Path:
    """An HF folder or a dummy model folder (``dummy_model.json``) as is; a trainer checkpoint (megatron
    dist checkpoint / run folder) is exported first with ``python -m trainer export-hf CKPT OUT`` (its CLI,
    not its internals).

    The export is reused only while its completion marker matches the checkpoint it came from (names,
    sizes and modification times of the checkpoint's files): a retrained or resumed run exports again.
    """
    from infra.folders import RunFolder
    from infra.marker import Marker, path_fingerprint
    from infra.proc import CLIError, run_cli

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model not found: {path}")
    if (p / "config.json").is_file() or (p / DUMMY_FILE).is_file():
        return p
    if RunFolder(p).has_hf():  # a run folder whose trainer already exported at the end
        return RunFolder(p).hf
    out = (Path(work_dir or p.parent) / f"{p.name}-hf").resolve()
    marker = Marker(out, "export")
    parts = {"checkpoint": path_fingerprint(p.resolve(), content=False), "source": str(p.resolve())}
    check = marker.check(parts, outputs=[out / "config.json"])
    if check:
        return out
    if out.exists():
        log.info("exporting %s again to %s (%s)", p, out, check.reason)
        shutil.rmtree(out)
    else:
        log.info("%s is not an HF folder: exporting it with the trainer to %s", p, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / f"{out.name}.export.log"
    try:
        run_cli("trainer", ["export-hf", str(p.resolve()), str(out)], log_path=log_path, what="trainer export-hf")
    except CLIError as e:
        raise ModelError(
            f"{path} is neither an HF model folder (no config.json) nor a checkpoint that "
            f"`trainer export-hf` can export: {e}"
        ) from None
    if not (out / "config.json").is_file():
        raise ModelError(f"`trainer export-hf {p}` finished without writing {out / 'config.json'} (log {log_path})")
    marker.write(parts)
    return out


class EvalModel(abc.ABC):
    """Interface. ``prompt_style`` is 'chat' (chat template) or 'completion' (raw text);
    ``backend`` names the implementation in messages and results; ``capabilities`` is what it can do."""

    name: str = ""
    prompt_style: str = "chat"
    backend: str = "custom"
    capabilities: frozenset[str] = frozenset({"generate"})

    # -- capabilities ----------------------------------------------------------------------------
    def require(self, what: str, *caps: str) -> EvalModel:
        """``self`` when it has every capability in ``caps``; else ModelError naming ``what`` (e.g.
        "suite 'probes'"), the missing capabilities, this backend and the backend that has them."""
        unknown = [c for c in caps if c not in CAPABILITIES]
        if unknown:
            raise ValueError(f"unknown capabilities {unknown} (known: {', '.join(CAPABILITIES)})")
        missing = [c for c in caps if c not in self.capabilities]
        if not missing:
            return self
        if set(missing) <= SERVER_CAPABILITIES:
            hint = "every built-in backend has them"
        else:
            hint = "backend.kind=transformers (an in-process model folder) has them; a server backend has only " + (
                ", ".join(c for c in CAPABILITIES if c in SERVER_CAPABILITIES)
            )
        raise ModelError(
            f"{what} needs {', '.join(missing)}, which the {self.backend} model {self.name or type(self).__name__} "
            f"does not have (it has: {', '.join(c for c in CAPABILITIES if c in self.capabilities)}); {hint}"
        )

    def _lacks(self, cap: str, method: str):
        """Raise for ``method`` of a capability this model does not declare (or declares but lacks)."""
        self.require(f"{method}()", cap)
        raise NotImplementedError(f"{type(self).__name__} declares {cap!r} but does not implement {method}()")

    # -- text ------------------------------------------------------------------------------------
    def format(self, prompt: str) -> str:
        """A user prompt as the model reads it (default: unchanged, as for a completion model)."""
        return prompt

    @abc.abstractmethod
    def generate(self, prompts: list[str], decoding) -> list[Generation]:
        """Answers to user prompts (formatted by the model) under ``decoding`` (a ``DecodingConfig``).
        Implementations start with ``decode_with`` so that registered decoding modes work everywhere."""

    def decode_with(self, prompts: list[str], decoding) -> list[Generation] | None:
        """Run a registered decoder (``decoding.mode`` not greedy/sample) on ``prompts``; None for the
        model's own greedy/sample path."""
        if decoding.mode in NATIVE_MODES:
            return None
        dec = DECODERS.get(decoding.mode)
        self.require(f"decoding mode {decoding.mode!r}", *dec.needs)
        return [dec.fn(self, p, decoding) for p in progress(prompts, desc=decoding.mode)]

    @staticmethod
    def _native(decoding, method: str) -> None:
        if decoding.mode not in NATIVE_MODES:
            raise ModelError(f"{method}() decodes greedy or sample only, not {decoding.mode!r}")

    def complete(self, texts: list[str], decoding) -> list[Generation]:
        """Raw continuations of ``texts`` (no chat formatting): an LLM judge's own prompt template."""
        self._lacks("complete", "complete")

    def chat(self, conversations: list[list[dict]], decoding) -> list[Generation]:
        """Answers to conversations (``[{"role", "content"}, ...]``) rendered with the chat template and
        a generation prompt. ``Generation.prompt`` is the last message's content."""
        self._lacks("chat", "chat")

    # -- scores and internals --------------------------------------------------------------------
    def loglikelihood(self, contexts: list[str], continuations: list[str]) -> list[float]:
        """Sum of log-probs of each continuation after its (already formatted) context."""
        self._lacks("loglikelihood", "loglikelihood")

    def hidden_states(self, texts: list[str], batch_size: int = 8):
        """Residual stream at the last token of each (formatted) text, every layer: [n, layers+1, d]."""
        self._lacks("hidden_states", "hidden_states")

    @property
    def num_layers(self) -> int:
        self._lacks("hidden_states", "num_layers")

    @contextlib.contextmanager
    def steer(self, layer: int, vector, scale: float = 1.0):
        """Add ``scale * vector`` to the output of block ``layer`` while the context is open."""
        self._lacks("steer", "steer")
        yield self

    def output_projections(self, skip_first: bool = True) -> list:
        """(layer, name, weight tensor) of the matrices writing into the residual stream, edited in place."""
        self._lacks("edit_weights", "output_projections")

    def save(self, out: str | Path) -> Path:
        """Write the (edited) model to folder ``out``, loadable again."""
        self._lacks("edit_weights", "save")

    # -- incremental decoding (capability next_token_logprobs) -----------------------------------
    def tag_token_id(self) -> int:
        """Id of the harmfulness tag token; ModelError when the vocabulary has none."""
        self._lacks("next_token_logprobs", "tag_token_id")

    @property
    def eos_token_id(self) -> int:
        self._lacks("next_token_logprobs", "eos_token_id")

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of the formatted user prompt."""
        self._lacks("next_token_logprobs", "encode_prompt")

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids (special tokens left out)."""
        self._lacks("next_token_logprobs", "decode")

    def start(self, prompt_ids: list[int]):
        """(state, float64 log-probs [1, V] of the token after ``prompt_ids``)."""
        self._lacks("next_token_logprobs", "start")

    def step(self, state, parent_rows, tokens):
        """Extend rows ``parent_rows`` (long tensor into the state's rows) by ``tokens`` (one each):
        (new state with one row per token, float64 log-probs [len(tokens), V] of the next token)."""
        self._lacks("next_token_logprobs", "step")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "backend": self.backend,
            "prompt_style": self.prompt_style,
            "capabilities": [c for c in CAPABILITIES if c in self.capabilities],
        }


def _pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def _cached_forward(lm, ids, cache=None):
    """One forward with a KV cache; transformers renamed ``past_key_values`` to ``cache`` during 5.x."""
    import inspect

    kw = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    out = lm(input_ids=ids, use_cache=True, **({kw: cache} if cache is not None else {}))
    new = getattr(out, "cache", None)
    return out, (new if new is not None else out.past_key_values)


class HFModel(EvalModel):
    """A transformers causal LM in process (CPU or GPU).

    Args:
        path: HF model folder. prompt_style: auto|chat|completion. device: auto|cpu|cuda[:i].
        dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16.
    """

    backend = "transformers"
    capabilities = frozenset(CAPABILITIES)

    def __init__(self, path: str | Path, prompt_style: str = "auto", device: str = "auto", dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM

        from infra.tokenizer import load_tokenizer

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise ModelError(f"not an HF model folder (no config.json): {path}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        try:
            # add_tag=False: the tokenizer must match the embedding matrix as trained
            self.tok = load_tokenizer(self.path, add_tag=False)
            self.model = (
                AutoModelForCausalLM.from_pretrained(str(self.path), dtype=_pick_dtype(dtype, device)).to(device).eval()
            )
        except Exception as e:  # noqa: BLE001 - re-raised with the path
            raise ModelError(f"cannot load model from {path}: {e}") from e
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        has_template = bool(getattr(self.tok, "chat_template", None))
        if prompt_style == "chat" and not has_template:
            raise ModelError(f"{path}: prompt_style=chat but the tokenizer has no chat template")
        self.prompt_style = ("chat" if has_template else "completion") if prompt_style == "auto" else prompt_style
        self.name = str(self.path)

    # -- text formatting -------------------------------------------------------------------------
    def format(self, prompt: str) -> str:
        if self.prompt_style == "chat":
            return self.render([{"role": "user", "content": prompt}])
        return prompt

    def render(self, conversation: list[dict]) -> str:
        """A conversation through the chat template, with the generation prompt."""
        if not getattr(self.tok, "chat_template", None):
            raise ModelError(f"{self.name}: the tokenizer has no chat template to render a conversation with")
        return self.tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def layers(self):
        """The decoder blocks (Llama-style ``model.model.layers``)."""
        inner = getattr(self.model, "model", None)
        layers = getattr(inner, "layers", None)
        if layers is None:
            raise ModelError(f"{self.path}: no model.model.layers; steering/abliteration support Llama-style models")
        return layers

    @property
    def num_layers(self) -> int:
        return len(self.layers())

    def _encode(self, texts: list[str], special: bool | None = None):
        # chat templates already contain BOS-like markers; don't add special tokens twice
        special = self.prompt_style != "chat" if special is None else special
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=special)
        return {k: v.to(self.device) for k, v in enc.items()}

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompts: list[str], decoding) -> list[Generation]:
        done = self.decode_with(prompts, decoding)
        if done is not None:
            return done
        return self._generate([self.format(p) for p in prompts], prompts, decoding, self.prompt_style != "chat")

    def complete(self, texts: list[str], decoding) -> list[Generation]:
        self._native(decoding, "complete")
        return self._generate(list(texts), list(texts), decoding, True)

    def chat(self, conversations: list[list[dict]], decoding) -> list[Generation]:
        self._native(decoding, "chat")
        texts = [self.render(c) for c in conversations]
        return self._generate(texts, [c[-1]["content"] if c else "" for c in conversations], decoding, False)

    def _generate(self, texts: list[str], labels: list[str], decoding, special: bool) -> list[Generation]:
        """Greedy or sampled continuations of ready ``texts``; ``labels`` become ``Generation.prompt``."""
        import torch

        out: list[Generation] = []
        bs = max(1, decoding.batch_size)
        if decoding.mode == "sample":
            torch.manual_seed(decoding.seed)
        for i in range(0, len(texts), bs):
            enc = self._encode(texts[i : i + bs], special)
            kw = dict(max_new_tokens=decoding.max_new_tokens, pad_token_id=self.tok.pad_token_id)
            if decoding.mode == "sample":
                kw.update(
                    do_sample=True, temperature=decoding.temperature, top_p=decoding.top_p, top_k=decoding.top_k or None
                )
            else:
                kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                gen = self.model.generate(**enc, **kw)
            new = gen[:, enc["input_ids"].shape[1] :]
            for p, ids in zip(labels[i : i + bs], new):
                ids = ids.tolist()
                n = len(ids)
                for j, t in enumerate(ids):  # count real tokens up to (and including) the first EOS
                    if t == self.tok.eos_token_id:
                        n = j + 1
                        break
                out.append(Generation(p, self.tok.decode(ids[:n], skip_special_tokens=True).strip(), n))
        return out

    # -- incremental decoding --------------------------------------------------------------------
    def tag_token_id(self) -> int:
        from infra.tokenizer import TokenizerError, tag_id

        try:
            tid = tag_id(self.tok)
        except TokenizerError as e:
            raise ModelError(f"{self.name}: {e}") from None
        if tid >= self.model.get_input_embeddings().weight.shape[0]:
            raise ModelError(f"{self.name}: tag id {tid} is outside the model's embedding matrix")
        return tid

    @property
    def eos_token_id(self) -> int:
        return self.tok.eos_token_id

    def encode_prompt(self, prompt: str) -> list[int]:
        return self.tok(self.format(prompt), add_special_tokens=self.prompt_style != "chat")["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def start(self, prompt_ids: list[int]):
        """The state is the KV cache (one row)."""
        import torch

        with torch.no_grad():
            out, cache = _cached_forward(self.model, torch.tensor([prompt_ids], device=self.device))
        return cache, torch.log_softmax(out.logits[:, -1].double(), dim=-1)

    def step(self, state, parent_rows, tokens):
        """Reorders the KV cache to ``parent_rows`` and runs one cached forward of ``tokens``."""
        import torch

        state.reorder_cache(parent_rows.to(self.device))
        with torch.no_grad():
            out, cache = _cached_forward(self.model, tokens.to(self.device)[:, None], state)
        return cache, torch.log_softmax(out.logits[:, -1].double(), dim=-1)

    # -- scores ----------------------------------------------------------------------------------
    def loglikelihood(self, contexts: list[str], continuations: list[str], batch_size: int = 16) -> list[float]:
        """Runs of pairs that share one context (the judge-free refusal score asks 14 openings per prompt)
        go through ``_shared_context_loglikelihood``: the context once, its KV cache reused by every
        continuation. Other pairs are batched whole, right-padded."""
        res: list[float] = [0.0] * len(contexts)
        single: list[int] = []
        i = 0
        while i < len(contexts):
            j = i
            while j + 1 < len(contexts) and contexts[j + 1] == contexts[i]:
                j += 1
            if j > i:
                res[i : j + 1] = self._shared_context_loglikelihood(contexts[i], continuations[i : j + 1], batch_size)
            else:
                single.append(i)
            i = j + 1
        for k, v in zip(
            single,
            self._batched_loglikelihood([contexts[k] for k in single], [continuations[k] for k in single], batch_size),
        ):
            res[k] = v
        return res

    def _shared_context_loglikelihood(self, context: str, continuations: list[str], batch_size: int) -> list[float]:
        """One cached forward of ``context``, then the continuations in batches of ``batch_size`` on a copy
        of its KV cache (right-padded; positions continue from the context). Equal to scoring each pair
        whole up to floating-point summation order."""
        import copy

        import torch

        ctx_ids = self.tok(context, add_special_tokens=self.prompt_style != "chat")["input_ids"]
        with torch.no_grad():
            out, cache = _cached_forward(self.model, torch.tensor([ctx_ids], device=self.device))
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        n_ctx, res = len(ctx_ids), []
        for i in range(0, len(continuations), batch_size):
            conts = [self.tok(c, add_special_tokens=False)["input_ids"] for c in continuations[i : i + batch_size]]
            longest = max(len(b) for b in conts)
            scores = [float(first[b[0]]) if b else 0.0 for b in conts]
            if longest > 1:  # every token after the first is predicted from the continuation's own positions
                m = len(conts)
                ids = torch.full((m, longest - 1), self.tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((m, n_ctx + longest - 1), dtype=torch.long)
                mask[:, :n_ctx] = 1
                for r, b in enumerate(conts):
                    ids[r, : len(b) - 1] = torch.tensor(b[:-1], dtype=torch.long)
                    mask[r, n_ctx : n_ctx + len(b) - 1] = 1
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(m)
                pos = torch.arange(n_ctx, n_ctx + longest - 1)[None].expand(m, -1)
                kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
                with torch.no_grad():
                    logits = self.model(
                        input_ids=ids.to(self.device),
                        attention_mask=mask.to(self.device),
                        position_ids=pos.to(self.device),
                        use_cache=True,
                        **{kw: past},
                    ).logits
                for r, b in enumerate(conts):
                    if len(b) > 1:
                        logp = torch.log_softmax(logits[r, : len(b) - 1].float(), dim=-1)
                        tgt = torch.tensor(b[1:], device=logits.device)
                        scores[r] += float(logp[torch.arange(len(b) - 1), tgt].sum())
            res.extend(scores)
        return res

    def _batched_loglikelihood(self, contexts: list[str], continuations: list[str], batch_size: int) -> list[float]:
        import torch

        res = []
        for i in range(0, len(contexts), batch_size):
            ctx_ids = [
                self.tok(c, add_special_tokens=self.prompt_style != "chat")["input_ids"]
                for c in contexts[i : i + batch_size]
            ]
            cont_ids = [self.tok(c, add_special_tokens=False)["input_ids"] for c in continuations[i : i + batch_size]]
            seqs = [a + b for a, b in zip(ctx_ids, cont_ids)]
            L = max(len(s) for s in seqs)
            pad = self.tok.pad_token_id
            ids = torch.full((len(seqs), L), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), L), dtype=torch.long)
            for j, s in enumerate(seqs):  # right padding: positions stay aligned with the context
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for j, (a, b) in enumerate(zip(ctx_ids, cont_ids)):
                # normalise only the continuation's positions: a full [batch, len, vocab] softmax
                # costs more than the forward itself for short continuations
                pos = torch.arange(len(a) - 1, len(a) + len(b) - 1, device=logits.device)
                logp = torch.log_softmax(logits[j, pos].float(), dim=-1)
                res.append(
                    float(logp[torch.arange(len(b)), torch.tensor(b, dtype=torch.long, device=logits.device)].sum())
                )
        return res

    def hidden_states(self, texts: list[str], batch_size: int = 8):
        """Residual stream at the last token of each (formatted) text, every layer: [n, layers+1, d]."""
        import torch

        rows = []
        for i in range(0, len(texts), batch_size):
            enc = self._encode(texts[i : i + batch_size])
            # left padding: positions must count real tokens only, or activations depend on the batch
            pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                hs = self.model(**enc, position_ids=pos, output_hidden_states=True).hidden_states
            # left padding: the last position is every row's last real token
            rows.append(torch.stack([h[:, -1, :].float().cpu() for h in hs], dim=1))
        return torch.cat(rows, dim=0)

    # -- interventions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def steer(self, layer: int, vector, scale: float = 1.0):
        """Add ``scale * vector`` to the residual stream output of block ``layer`` at every position."""
        import torch

        v = torch.as_tensor(vector, dtype=self.model.dtype, device=self.device) * scale

        def hook(_mod, _inp, output):
            if isinstance(output, tuple):
                return (output[0] + v,) + tuple(output[1:])
            return output + v

        handle = self.layers()[layer].register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()

    def output_projections(self, skip_first: bool = True):
        """(layer, name, weight) of the matrices that write into the residual stream: attention output
        and MLP down projections."""
        mats = []
        for i, blk in enumerate(self.layers()):
            if skip_first and i == 0:
                continue
            mats.append((i, "self_attn.o_proj", blk.self_attn.o_proj.weight))
            mats.append((i, "mlp.down_proj", blk.mlp.down_proj.weight))
        return mats

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tok.save_pretrained(str(out))
        return out

    def describe(self) -> dict:
        return super().describe() | {
            "device": self.device,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "num_layers": self.num_layers,
        }


class OpenAIModel(EvalModel):
    """Any OpenAI-compatible server (vLLM started by the product, or a given URL), through the shared
    ``infra.inference.ChatClient`` (bounded concurrency, timeouts, retries with backoff).

    A request the server rejects comes back as a ``Generation`` with ``error`` set (the others of the
    batch are kept); a server that cannot be reached at all raises ModelError.

    Args:
        base_url: server root (with or without ``/v1``). served_model: model name the server knows
        (default: the first of ``/v1/models``). prompt_style: chat -> /v1/chat/completions,
        completion -> /v1/completions. timeout_s: seconds per request. concurrency: most requests in
        flight at once. max_retries: retries of a request after a connection error, timeout, 429 or 5xx.
    """

    backend = "openai"
    capabilities = SERVER_CAPABILITIES

    def __init__(
        self,
        base_url: str,
        served_model: str = "",
        prompt_style: str = "chat",
        timeout_s: float = 300.0,
        concurrency: int = 8,
        max_retries: int = 3,
    ):
        from infra.inference.client import ChatClient

        self.client = ChatClient(
            base_url, served_model, max_concurrency=max(1, concurrency), timeout=timeout_s, max_retries=max_retries
        )
        self.base = self.client.base_url
        if not served_model:
            try:
                served_model = self.client.models()[0]
            except Exception as e:  # noqa: BLE001 - re-raised with the URL
                raise ModelError(f"cannot list models at {self.base}/models: {e}") from e
            self.client.model = served_model
        self.served_model = served_model
        self.prompt_style = "completion" if prompt_style == "completion" else "chat"
        self.name = f"{served_model}@{self.base}"

    def _sampling(self, decoding) -> dict:
        sample = decoding.mode == "sample"
        s = {
            "max_tokens": decoding.max_new_tokens,
            "temperature": decoding.temperature if sample else 0.0,
            "top_p": decoding.top_p if sample else 1.0,
            "seed": decoding.seed,
        }
        if sample and decoding.top_k:
            s["top_k"] = decoding.top_k
        return s

    def generate(self, prompts: list[str], decoding) -> list[Generation]:
        done = self.decode_with(prompts, decoding)
        if done is not None:
            return done
        if self.prompt_style == "chat":
            return self.chat([[{"role": "user", "content": p}] for p in prompts], decoding)
        return self.complete(prompts, decoding)

    def complete(self, texts: list[str], decoding) -> list[Generation]:
        from infra.inference.client import ChatRequest

        self._native(decoding, "complete")
        sampling = self._sampling(decoding)
        return self._send([ChatRequest(prompt=t, sampling=sampling) for t in texts], list(texts))

    def chat(self, conversations: list[list[dict]], decoding) -> list[Generation]:
        from infra.inference.client import ChatRequest

        self._native(decoding, "chat")
        sampling = self._sampling(decoding)
        reqs = [ChatRequest(messages=list(c), sampling=sampling) for c in conversations]
        return self._send(reqs, [c[-1]["content"] if c else "" for c in conversations])

    def _send(self, reqs: list, labels: list[str]) -> list[Generation]:
        from infra.inference.client import EndpointUnavailable

        try:
            results = self.client.batch(reqs)
        except EndpointUnavailable as e:
            raise ModelError(f"generation through {self.base} failed: {e}") from e
        out = []
        for p, r in zip(labels, results):
            if isinstance(r, Exception):  # a 4xx (prompt too long, bad parameter): this request only
                out.append(Generation(p, "", 0, error=f"{type(r).__name__}: {r}"))
            else:  # no choices or no content: "" with 0 tokens, which the suites count as an error
                text = r.text if isinstance(r.text, str) else ""
                out.append(Generation(p, text.strip(), r.completion_tokens))
        return out

    def describe(self) -> dict:
        return super().describe() | {"served_model": self.served_model, "url": self.base}


@contextlib.contextmanager
def open_model(model_dir: Path, backend):
    """Yield the ``EvalModel`` that ``backend`` (a ``BackendConfig``) asks for; a vLLM server started
    here is stopped on exit. A dummy model folder (``dummy_model.json``) loads ``evalkit.dummy.DummyModel``
    in process (``backend.kind=transformers``)."""
    if (Path(model_dir) / DUMMY_FILE).is_file():
        if backend.kind != "transformers":
            raise ModelError(f"{model_dir} is a dummy model folder: it runs in process (backend.kind=transformers)")
        from evalkit.dummy import DummyModel

        style = None if backend.prompt_style == "auto" else backend.prompt_style
        yield DummyModel.from_dir(model_dir, prompt_style=style)
        return
    if backend.kind == "transformers":
        yield HFModel(model_dir, backend.prompt_style, backend.device, backend.dtype)
        return
    style = backend.prompt_style
    if style == "auto":
        from infra.tokenizer import load_tokenizer

        tok = load_tokenizer(model_dir, add_tag=False) if (Path(model_dir) / "config.json").is_file() else None
        style = "chat" if tok is None or getattr(tok, "chat_template", None) else "completion"
    if backend.kind == "openai":
        yield OpenAIModel(
            backend.url,
            backend.served_model,
            style,
            backend.request_timeout_s,
            backend.concurrency,
            backend.max_retries,
        )
        return
    try:
        from infra.inference import VLLMServer  # written by the inference package
    except ImportError as e:
        raise ModelError(f"backend.kind=vllm needs infra.inference.VLLMServer ({e})") from e
    import torch

    dtype = backend.dtype
    if dtype == "auto":  # CPUs here lack bf16 instructions; GPUs serve bf16
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    with VLLMServer(
        str(model_dir),
        port=backend.vllm_port or None,
        dtype=dtype,
        served_model_name=backend.served_model or None,
        extra_args=backend.vllm_args,
    ) as server:
        yield OpenAIModel(
            server.base_url,
            server.model_name,
            style,
            backend.request_timeout_s,
            backend.concurrency,
            backend.max_retries,
        )
