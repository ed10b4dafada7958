"""The ``llm`` judge: a judge model asked about every answer with one protocol (``evalkit.protocols``).

```yaml
judges:
  use:
    - {kind: llm, protocol: harmbench, url: http://gpu-node:8000/v1, served_model: cais/HarmBench-Llama-2-13b-cls}
    - {kind: llm, protocol: llamaguard, url: http://gpu-node:8001/v1}
    - {kind: llm, protocol: refusal, model: self}
```

The judge model is the evaluated model (``model: self``), a model folder run in process with
transformers (``model: PATH``), or an OpenAI-compatible server (``url``, e.g. vLLM on a cluster). Each
(prompt, output) pair is rendered by the protocol and sent through the model method the protocol asks
for (``generate``: one user message in the judge model's chat template; ``complete``: raw text;
``chat``: a conversation in the judge model's chat template), all requests of a call in one batch (the
model batches them: ``batch_size`` forward batches in process, ``concurrency`` requests to a server).

Every answer keeps its raw text in the verdict. A request the judge server failed or rejected is an
``error`` verdict with the server's reason, an empty answer is an ``error``, an answer outside the
protocol's format is ``unparsed``. A judge server that cannot be reached at all (after its retries)
stops the run: a missing judge is a setup problem, not an outcome of the answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.config import DecodingConfig
from evalkit.model import EvalModel
from evalkit.protocols import PROTOCOLS, Protocol, get_protocol
from evalkit.registry import JUDGES
from evalkit.verdict import Verdict
from infra.config import ConfigError

__all__ = ["LLMJudge"]


@JUDGES.register("llm")
class LLMJudge:
    """Verdicts of a judge model under one protocol; ``overrefusal()`` asks the same model the four-way
    over-refusal question (not offered with a dedicated classifier's protocol, ``harmbench`` and
    ``llamaguard``, whose model cannot answer it).

    Args:
        model: the judge model (any ``EvalModel``).
        protocol: a registered protocol name, ``module:attribute``, or a ``Protocol``.
        name: the judge's key in results.json (default ``llm_<protocol>``).
        max_new_tokens: answer length cap (0: the protocol's own).
        batch_size: forward batch of an in-process judge model.
    """

    @dataclass
    class Config:
        """Options of the LLM judge (exactly one of ``model`` and ``url``).

        Attributes:
            protocol: how the judge is asked and its answer read: refusal | harmful | self_refusal |
                harmbench | llamaguard | strongreject | overrefusal (``evalkit.protocols``), or
                ``module:attribute`` of a user's own ``Protocol``.
            model: the judge model: ``self`` (the evaluated model) or a model folder run in process with
                transformers; empty: the server at ``url``.
            url: an OpenAI-compatible server running the judge model (vLLM on a cluster), with or without
                ``/v1``.
            served_model: the model name sent to ``url`` (empty: the first model the server lists).
            max_new_tokens: the judge's answer length cap (0: the protocol's default).
            request_timeout_s: seconds per request to ``url``.
            concurrency: requests in flight at once to ``url``.
            max_retries: retries of a request to ``url`` after connection errors, timeouts, 429 and 5xx.
            batch_size: forward batch of an in-process judge model (``model``).
        """

        protocol: str = "refusal"
        model: str = ""
        url: str = ""
        served_model: str = ""
        max_new_tokens: int = 0
        request_timeout_s: float = 300.0
        concurrency: int = 8
        max_retries: int = 3
        batch_size: int = 8

        def validate(self):
            if self.protocol not in PROTOCOLS:
                raise ConfigError(
                    f"llm judge: key 'protocol': unknown protocol {self.protocol!r} "
                    f"(known: {', '.join(PROTOCOLS.names())}, or module:attribute)"
                )
            if bool(self.model) == bool(self.url):
                raise ConfigError(
                    "llm judge: give exactly one of 'model' (self or a model folder) and 'url' (a server), "
                    f"got model={self.model!r}, url={self.url!r}"
                )
            if self.served_model and not self.url:
                raise ConfigError("llm judge: key 'served_model' only applies with 'url'")
            if self.max_new_tokens < 0:
                raise ConfigError("llm judge: key 'max_new_tokens' must be >= 0 (0: the protocol's default)")
            if self.request_timeout_s <= 0:
                raise ConfigError("llm judge: key 'request_timeout_s' must be > 0")
            if self.concurrency < 1 or self.batch_size < 1:
                raise ConfigError("llm judge: keys 'concurrency' and 'batch_size' must be >= 1")
            if self.max_retries < 0:
                raise ConfigError("llm judge: key 'max_retries' must be >= 0")

    def __init__(
        self,
        model: EvalModel,
        protocol: str | Protocol = "refusal",
        name: str = "",
        max_new_tokens: int = 0,
        batch_size: int = 8,
    ):
        self.model = model
        self.protocol = get_protocol(protocol)
        self.name = name or f"llm_{self.protocol.name}"
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    @classmethod
    def default_name(cls, cfg: Config) -> str:
        protocol = get_protocol(cfg.protocol).name
        return f"llm_self_{protocol}" if cfg.model == "self" else f"llm_{protocol}"

    @classmethod
    def from_config(cls, cfg: Config, model: EvalModel | None = None, name: str = "") -> LLMJudge:
        """The judge ``cfg`` describes; ``model`` is the evaluated model (for ``model: self``)."""
        cfg.validate()
        if cfg.model == "self":
            if model is None:
                raise ConfigError("llm judge: model: self needs the evaluated model")
            judge_model = model
        elif cfg.model:
            from evalkit.model import HFModel

            judge_model = HFModel(cfg.model)
        else:
            from evalkit.model import OpenAIModel

            judge_model = OpenAIModel(
                cfg.url, cfg.served_model, "chat", cfg.request_timeout_s, cfg.concurrency, cfg.max_retries
            )
        return cls(judge_model, cfg.protocol, name or cls.default_name(cfg), cfg.max_new_tokens, cfg.batch_size)

    # -- judging ---------------------------------------------------------------------------------------
    def ask(self, protocol: Protocol, prompts: list[str], outputs: list[str]) -> list[Verdict]:
        """One verdict per (prompt, output) under ``protocol``, in order."""
        if len(prompts) != len(outputs):
            raise ValueError(f"judge {self.name}: {len(prompts)} prompts but {len(outputs)} outputs")
        if not prompts:
            return []
        requests = [protocol.render(p, o) for p, o in zip(prompts, outputs)]
        decoding = DecodingConfig(
            mode="greedy", max_new_tokens=self.max_new_tokens or protocol.max_new_tokens, batch_size=self.batch_size
        )
        send = {"user": self.model.generate, "completion": self.model.complete, "chat": self.model.chat}
        gens = send[protocol.send](requests, decoding)
        if len(gens) != len(requests):
            raise RuntimeError(f"judge {self.name}: the judge model returned {len(gens)} answers for {len(requests)}")
        out = []
        for g in gens:
            error = getattr(g, "error", "")
            if error:
                out.append(Verdict.error(f"judge request failed: {error}", raw=g.text))
            else:
                out.append(protocol.parse(g.text))
        return out

    def judge(self, prompts: list[str], outputs: list[str]) -> list[Verdict]:
        """``refusal`` / ``non_refusal`` verdicts (or unparsed / error) under the judge's protocol."""
        return self.ask(self.protocol, prompts, outputs)

    def _overrefusal(self, prompts: list[str], outputs: list[str]) -> list[Verdict]:
        return self.ask(get_protocol("overrefusal"), prompts, outputs)

    @property
    def overrefusal(self):
        """``overrefusal(prompts, outputs) -> list[Verdict]``: the four over-refusal classes from the same
        judge model; None with a dedicated classifier's protocol (``evalkit.judges`` then skips it)."""
        return None if self.protocol.classifier else self._overrefusal

    def describe(self) -> dict:
        return {"protocol": self.protocol.name, "model": self.model.describe()}
