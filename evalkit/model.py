"""The narrow model interface evalkit's suites talk to, and its two implementations.

``EvalModel`` (text in, text/numbers out): ``format``, ``generate``, ``loglikelihood``. Suites that
need internals (probes, steering, abliteration, SafeBeam) also use ``hidden_states``, ``steer`` and
``edit_weights``, which only the in-process transformers model has; a server model raises a clear
error naming the suite's need.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from infra.log import get_logger, progress

log = get_logger(__name__)


class ModelError(RuntimeError):
    """A model that cannot be loaded or cannot do what a suite asks."""


@dataclass
class Generation:
    prompt: str
    text: str
    new_tokens: int


def resolve_model_dir(path: str | Path, work_dir: Path | None = None) -> Path:
    """An HF folder as is; a trainer checkpoint (megatron dist checkpoint / run folder) is exported
    first with ``python -m trainer export-hf CKPT OUT`` (its CLI, not its internals).

    The export is reused only while its completion marker matches the checkpoint it came from (names,
    sizes and modification times of the checkpoint's files): a retrained or resumed run exports again.
    """
    from infra.folders import RunFolder
    from infra.marker import Marker, path_fingerprint
    from infra.proc import CLIError, run_cli

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model not found: {path}")
    if (p / "config.json").is_file():
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


class EvalModel:
    """Interface. ``prompt_style`` is 'chat' (chat template) or 'completion' (raw text)."""

    name: str = ""
    prompt_style: str = "chat"

    def format(self, prompt: str) -> str:
        raise NotImplementedError

    def generate(self, prompts: list[str], decoding) -> list[Generation]:
        """Answers to user prompts (formatted here) under ``decoding`` (an ``evalkit.config.DecodingConfig``)."""
        raise NotImplementedError

    def loglikelihood(self, contexts: list[str], continuations: list[str]) -> list[float]:
        """Sum of log-probs of each continuation after its (already formatted) context."""
        raise NotImplementedError

    def hidden_states(self, texts: list[str], batch_size: int = 8):
        raise ModelError(f"{type(self).__name__} has no hidden states: use backend.kind=transformers")

    def describe(self) -> dict:
        return {"name": self.name, "prompt_style": self.prompt_style}


def _pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


class HFModel(EvalModel):
    """A transformers causal LM in process (CPU or GPU).

    Args:
        path: HF model folder. prompt_style: auto|chat|completion. device: auto|cpu|cuda[:i].
        dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16.
    """

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
            return self.tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

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

    def _encode(self, texts: list[str]):
        # chat templates already contain BOS-like markers; don't add special tokens twice
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=self.prompt_style != "chat")
        return {k: v.to(self.device) for k, v in enc.items()}

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompts: list[str], decoding) -> list[Generation]:
        import torch

        if decoding.mode == "safebeam":
            from evalkit.safebeam import safebeam_generate

            return [safebeam_generate(self, p, decoding) for p in progress(prompts, desc="safebeam")]
        out: list[Generation] = []
        bs = max(1, decoding.batch_size)
        if decoding.mode == "sample":
            torch.manual_seed(decoding.seed)
        for i in range(0, len(prompts), bs):
            chunk = prompts[i : i + bs]
            enc = self._encode([self.format(p) for p in chunk])
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
            for p, ids in zip(chunk, new):
                ids = ids.tolist()
                n = len(ids)
                for j, t in enumerate(ids):  # count real tokens up to (and including) the first EOS
                    if t == self.tok.eos_token_id:
                        n = j + 1
                        break
                out.append(Generation(p, self.tok.decode(ids[:n], skip_special_tokens=True).strip(), n))
        return out

    # -- scores ----------------------------------------------------------------------------------
    def loglikelihood(self, contexts: list[str], continuations: list[str], batch_size: int = 16) -> list[float]:
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
                res.append(float(logp[torch.arange(len(b)), torch.tensor(b, device=logits.device)].sum()))
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
        return {
            "name": self.name,
            "backend": "transformers",
            "prompt_style": self.prompt_style,
            "device": self.device,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "num_layers": self.num_layers,
        }


class OpenAIModel(EvalModel):
    """Any OpenAI-compatible server (vLLM started by the product, or a given URL), through the shared
    ``infra.inference.ChatClient`` (bounded concurrency, timeouts, retries with backoff).

    Args:
        base_url: server root (with or without ``/v1``). served_model: model name the server knows
        (default: the first of ``/v1/models``). prompt_style: chat -> /v1/chat/completions,
        completion -> /v1/completions. timeout_s: seconds per request. concurrency: most requests in
        flight at once. max_retries: retries of a request after a connection error, timeout, 429 or 5xx.
    """

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

    def format(self, prompt: str) -> str:
        return prompt

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
        if decoding.mode == "safebeam":
            raise ModelError("SafeBeam needs per-step tag probabilities: use backend.kind=transformers")
        from infra.inference.client import ChatRequest, EndpointUnavailable

        sampling = self._sampling(decoding)
        if self.prompt_style == "chat":
            reqs = [ChatRequest(messages=[{"role": "user", "content": p}], sampling=sampling) for p in prompts]
        else:
            reqs = [ChatRequest(prompt=p, sampling=sampling) for p in prompts]
        try:
            results = self.client.batch(reqs)
        except EndpointUnavailable as e:
            raise ModelError(f"generation through {self.base} failed: {e}") from e
        out = []
        for p, r in zip(prompts, results):
            if isinstance(r, Exception):  # a 4xx answer (prompt too long, unknown model) will not succeed later
                raise ModelError(f"{self.base} rejected a request: {r}")
            out.append(Generation(p, r.text.strip(), r.completion_tokens))
        return out

    def loglikelihood(self, contexts, continuations):
        raise ModelError("log-likelihood scores need backend.kind=transformers")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "backend": "openai",
            "prompt_style": self.prompt_style,
            "served_model": self.served_model,
            "url": self.base,
        }


@contextlib.contextmanager
def open_model(model_dir: Path, backend):
    """Yield the ``EvalModel`` that ``backend`` (a ``BackendConfig``) asks for; a vLLM server started
    here is stopped on exit."""
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
