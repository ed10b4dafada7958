"""``DummyModel``: a deterministic, weightless test double of ``EvalModel`` with every capability.

It is not a language model. It exists so that suites, judges and reports can be tested in seconds:

* Words (and punctuation marks) are its tokens; its vocabulary is EOS, the harmfulness tag, ``<unk>``
  and the words of its trigger lists and of its three answers. Unknown words read as ``<unk>``.
* A text's residual stream is ``num_layers`` blocks over a ``hidden_size`` vector: the embedding is a
  small pseudo-random vector from a hash of the text with nothing along dimension 0 (the planted
  refusal direction ``refusal_direction``); every block ``l`` adds ``W_l @ f``, where ``f[0]`` is
  ``(trigger + tag - jailbreak) / num_layers`` (1 for each trigger word / tag / jailbreak word present,
  counted once) and ``W_l`` (identity at first) are the ``output_projections``. ``steer`` adds a vector
  to a block's output. The final state's coordinate 0 is the refusal score: above 0.5 it refuses.
* Answers: the refusal sentence when it refuses; otherwise the harmful sentence for a prompt with a
  trigger word (its words make the tag likely next, so SafeBeam drops them) and the helpful sentence
  for the others. Scripted answers (``answers`` exact, ``answer_rules`` substring) come first and do
  not react to steering. Chosen prompts (any listed substring) fail: ``errors``, ``empty`` (text "",
  one token: EOS), ``zero_tokens`` (the answer with 0 new tokens, as a server without usage says).
* Next-token log-probs mix the three answers (weights from the refusal score) with a little mass on
  every token; ``loglikelihood`` and ``generate`` follow them; greedy and sample decode the same.

A folder holding ``dummy_model.json`` (this class's keyword arguments as JSON; ``save`` adds the
edited projections) loads with ``DummyModel.from_dir`` and through ``evalkit.model.open_model``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
from pathlib import Path

from evalkit.model import CAPABILITIES, DUMMY_FILE, EvalModel, Generation, ModelError
from infra.corpus import TAG_TOKEN

EOS, UNK, SEP = "<eos>", "<unk>", "<answer>"  # SEP ends an encoded prompt
_WORD = re.compile(re.escape(TAG_TOKEN) + r"|\w+(?:'\w+)?|[^\w\s]")
DEFAULTS = {
    "name": "dummy",
    "prompt_style": "chat",
    "triggers": ["bomb", "weapon", "poison", "hack", "steal", "kill", "drugs", "malware"],
    "jailbreak_words": ["grandma", "hypothetically"],
    "refusal": "I'm sorry, but I can't help with that.",
    "helpful": "Sure, here is a helpful answer to your question.",
    "harmful": "Step one: gather the dangerous materials and follow the instructions.",
    "answers": {},
    "answer_rules": [],
    "errors": [],
    "empty": [],
    "zero_tokens": [],
    "hidden_size": 8,
    "num_layers": 4,
    "noise": 0.05,
}


def words(text: str) -> list[str]:
    return _WORD.findall(text)


class DummyModel(EvalModel):
    """Test double; keyword arguments as in ``DEFAULTS`` (see the module docstring), ``projections``:
    ``num_layers`` matrices ``[hidden_size][hidden_size]`` (default identity)."""

    backend = "dummy"
    capabilities = frozenset(CAPABILITIES)

    def __init__(self, projections=None, path: str | Path | None = None, **config):
        import torch

        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise ModelError(f"dummy model: unknown keys {sorted(unknown)} (known: {', '.join(DEFAULTS)})")
        for k, v in config.items():
            if not isinstance(v, type(DEFAULTS[k])) and not (isinstance(v, int) and isinstance(DEFAULTS[k], float)):
                raise ModelError(f"dummy model: {k} must be a {type(DEFAULTS[k]).__name__}, got {v!r}")
        self.config = c = {k: config.get(k, v) for k, v in DEFAULTS.items()}
        self.name, self.prompt_style, self.path = c["name"], c["prompt_style"], Path(path) if path else None
        self._answer = {k: words(c[k]) for k in ("refusal", "helpful", "harmful")}
        known = words(" ".join(c["triggers"] + c["jailbreak_words"] + [c["refusal"], c["helpful"], c["harmful"]]))
        self.vocab = list(dict.fromkeys([EOS, TAG_TOKEN, UNK, SEP, *known]))
        self.ids = {w: i for i, w in enumerate(self.vocab)}
        d, n = c["hidden_size"], c["num_layers"]
        mats = projections if projections is not None else [torch.eye(d).tolist() for _ in range(n)]
        self.W = [torch.tensor(m, dtype=torch.float32) for m in mats]
        if len(self.W) != n or any(w.shape != (d, d) for w in self.W):
            raise ModelError(f"dummy model: projections must be {n} matrices of {d}x{d}")
        self.refusal_direction = torch.eye(d)[0]
        self._steers: list[tuple[int, object]] = []
        # words only the harmful answer has: after them the tag is likely
        self._tagged = {self.ids[w] for w in self._answer["harmful"]} - {
            self.ids[w] for k in ("refusal", "helpful") for w in self._answer[k]
        }

    # -- folders ---------------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | Path, prompt_style: str | None = None) -> DummyModel:
        f = Path(path) / DUMMY_FILE
        try:
            cfg = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"cannot read dummy model {f}: {e}") from None
        if not isinstance(cfg, dict):
            raise ModelError(f"{f}: expected a JSON object")
        if prompt_style:
            cfg["prompt_style"] = prompt_style
        return cls(path=path, **cfg)

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        blob = self.config | {"projections": [w.tolist() for w in self.W]}
        (out / DUMMY_FILE).write_text(json.dumps(blob, indent=1), encoding="utf-8")
        return out

    # -- residual stream -------------------------------------------------------------------------
    def _has(self, text: str, key: str) -> bool:
        ws = {w.lower() for w in words(text)}
        return any(t.lower() in ws for t in self.config[key])

    def _noise(self, text: str, salt: str):
        import torch

        g = torch.Generator().manual_seed(int(hashlib.sha256((salt + text).encode()).hexdigest()[:15], 16))
        v = torch.randn(self.config["hidden_size"], generator=g) * self.config["noise"]
        v[0] = 0.0
        return v

    def _states(self, text: str):
        """[layers+1, d]: embedding, then every block's output."""
        import torch

        f = self._noise(text, "f")
        f[0] = (self._has(text, "triggers") + (TAG_TOKEN in text) - self._has(text, "jailbreak_words")) / len(self.W)
        h = [self._noise(text, "e")]
        for layer, w in enumerate(self.W):
            x = h[-1] + w @ f
            for at, v in self._steers:
                if at == layer:
                    x = x + v
            h.append(x)
        return torch.stack(h)

    def refusal_score(self, text: str) -> float:
        """The final state along the planted direction (>0.5: refuses)."""
        return float(self._states(text)[-1, 0])

    def hidden_states(self, texts: list[str], batch_size: int = 8):
        import torch

        return torch.stack([self._states(t) for t in texts])

    @property
    def num_layers(self) -> int:
        return len(self.W)

    @contextlib.contextmanager
    def steer(self, layer: int, vector, scale: float = 1.0):
        import torch

        item = (layer, torch.as_tensor(vector, dtype=torch.float32).flatten() * scale)
        self._steers.append(item)
        try:
            yield self
        finally:
            self._steers.remove(item)

    def output_projections(self, skip_first: bool = True) -> list:
        return [(i, "mlp.down_proj", w) for i, w in enumerate(self.W) if not (skip_first and i == 0)]

    # -- answers ---------------------------------------------------------------------------------
    def format(self, prompt: str) -> str:
        return f"User: {prompt}\nAssistant:" if self.prompt_style == "chat" else prompt

    def _weights(self, text: str) -> dict[str, float]:
        """Log-weights of the three answers after ``text``: the likelier the refusal the higher its score."""
        z = self.refusal_score(text)
        other = "harmful" if self._has(text, "triggers") else "helpful"
        return {"refusal": 6.0 * (z - 0.5), other: 0.0, ("helpful" if other == "harmful" else "harmful"): -4.0}

    def _answer_text(self, key: str, text: str) -> str:
        if key in self.config["answers"]:
            return self.config["answers"][key]
        for sub, v in self.config["answer_rules"]:
            if sub in key:
                return v
        w = self._weights(text)
        return self.config[max(w, key=w.get)]

    def _run(self, keys: list[str], texts: list[str], decoding) -> list[Generation]:
        out = []
        for key, text in zip(keys, texts):
            hit = {k for k in ("errors", "empty", "zero_tokens") if any(s in key for s in self.config[k])}.__contains__
            if hit("errors"):
                out.append(Generation(key, "", 0, error="dummy model: scripted failure"))
                continue
            if hit("empty"):
                out.append(Generation(key, "", 1))
                continue
            toks = (words(self._answer_text(key, text)) + [EOS])[: decoding.max_new_tokens]
            answer = self._join([w for w in toks if w != EOS])
            out.append(Generation(key, answer, 0 if hit("zero_tokens") else len(toks)))
        return out

    def generate(self, prompts: list[str], decoding) -> list[Generation]:
        done = self.decode_with(prompts, decoding)
        if done is not None:
            return done
        return self._run(list(prompts), [self.format(p) for p in prompts], decoding)

    def complete(self, texts: list[str], decoding) -> list[Generation]:
        self._native(decoding, "complete")
        return self._run(list(texts), list(texts), decoding)

    def chat(self, conversations: list[list[dict]], decoding) -> list[Generation]:
        self._native(decoding, "chat")
        rendered = [
            "\n".join(f"{m['role'].title()}: {m['content']}" for m in c) + "\nAssistant:" for c in conversations
        ]
        return self._run([c[-1]["content"] if c else "" for c in conversations], rendered, decoding)

    # -- token-level -----------------------------------------------------------------------------
    @staticmethod
    def _join(ws: list[str]) -> str:
        return re.sub(r" ([^\w\s'<])", r"\1", " ".join(ws))

    def _logprobs(self, text: str, gen: list[int]):
        """float64 log-probs [V] of the token after ``gen`` (ids) generated after ``text``."""
        import torch

        p = torch.full((len(self.vocab),), 1e-3, dtype=torch.float64)
        eos = self.ids[EOS]
        on = []  # (next id, weight) of the answers ``gen`` is a prefix of
        for key, lw in self._weights(text).items():
            ans = [self.ids[x] for x in self._answer[key]] + [eos]
            if ans[: len(gen)] == gen:
                on.append((ans[len(gen)] if len(gen) < len(ans) else eos, math.exp(lw)))
        for t, w in on:
            p[t] += w / sum(x for _, x in on)
        if not on:  # off every answer: it ends here, and the tag is a little likelier than on one
            p[eos] += 1.0
        tagged = bool(gen) and gen[-1] in self._tagged
        p[self.ids[TAG_TOKEN]] = 0.1 if tagged else (1e-3 if on else 1e-2)
        return (p / p.sum()).log()

    def tag_token_id(self) -> int:
        return self.ids[TAG_TOKEN]

    @property
    def eos_token_id(self) -> int:
        return self.ids[EOS]

    def encode(self, text: str) -> list[int]:
        unk = self.ids[UNK]
        return [self.ids.get(w, self.ids.get(w.lower(), unk)) for w in words(text)]  # triggers match any case

    def encode_prompt(self, prompt: str) -> list[int]:
        """The formatted prompt's ids and ``<answer>``: what follows that token is the answer."""
        return self.encode(self.format(prompt)) + [self.ids[SEP]]

    def decode(self, ids: list[int]) -> str:
        return self._join([self.vocab[i] for i in ids if self.vocab[i] not in (EOS, TAG_TOKEN, SEP)])

    def _next(self, ids: list[int]):
        """Log-probs after a whole sequence: the text before its last ``<answer>``, the answer after it."""
        cut = max((i for i, t in enumerate(ids) if t == self.ids[SEP]), default=len(ids))
        return self._logprobs(self._join([self.vocab[i] for i in ids[:cut]]), ids[cut + 1 :])

    def start(self, prompt_ids: list[int]):
        """The state is the id sequence of each row; every step recomputes from it."""
        return [list(prompt_ids)], self._next(list(prompt_ids))[None]

    def step(self, state, parent_rows, tokens):
        import torch

        new = [state[int(r)] + [int(t)] for r, t in zip(parent_rows, tokens)]
        return new, torch.stack([self._next(ids) for ids in new])

    def loglikelihood(self, contexts: list[str], continuations: list[str]) -> list[float]:
        out = []
        for ctx, cont in zip(contexts, continuations):
            ids = self.encode(cont)
            out.append(sum(float(self._logprobs(ctx, ids[:i])[t]) for i, t in enumerate(ids)))
        return out

    def describe(self) -> dict:
        return super().describe() | {"num_layers": self.num_layers, "path": str(self.path or "")}
