"""Typed configuration of ``python -m evalkit run`` (YAML under ``configs/evalkit/`` + ``key=value``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from evalkit.registry import JUDGES, SUITES  # entries register themselves there; read here to check the config
from infra.config import ConfigError


@dataclass
class DecodingConfig:
    """How answers are generated; recorded in results.json.

    Attributes:
        mode: greedy | sample | safebeam (Algorithm 2, needs the harmfulness tag in the tokenizer).
        max_new_tokens: answer length cap.
        temperature: sampling temperature (sampling only).
        top_p: nucleus sampling threshold (sampling only).
        top_k: top-k sampling limit (sampling only; 0: no limit).
        seed: sampling seed (sampling only).
        beams: SafeBeam's k beams.
        top_n: SafeBeam's N proposals per beam.
        drop_fraction: SafeBeam's share of candidates dropped.
        batch_size: prompts per forward batch (transformers; a server backend sends up to
            ``backend.concurrency`` at once).
    """

    mode: Literal["greedy", "sample", "safebeam"] = "greedy"
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    beams: int = 4
    top_n: int = 8
    drop_fraction: float = 0.5
    batch_size: int = 8

    def validate(self):
        if self.max_new_tokens < 1:
            raise ConfigError("key 'decoding.max_new_tokens' must be >= 1")
        if not 0.0 <= self.drop_fraction < 1.0:
            raise ConfigError("key 'decoding.drop_fraction' must be in [0, 1)")
        if self.beams < 1 or self.top_n < 1:
            raise ConfigError("keys 'decoding.beams' and 'decoding.top_n' must be >= 1")


@dataclass
class BackendConfig:
    """Where generations come from.

    Attributes:
        kind: transformers (in process) | vllm (a server this command starts from the model folder) |
            openai (a running OpenAI-compatible server at ``url``).
        url: the OpenAI-compatible server (required with ``kind=openai``).
        served_model: model name sent to the server (empty: with openai, the first model the server
            lists; with vllm, the model folder).
        prompt_style: chat (chat template) | completion (raw text) | auto (chat when the tokenizer has a
            template).
        device: transformers placement, auto | cpu | cuda[:i] (auto: cuda when available).
        dtype: weights' dtype of transformers and of a started vLLM server (auto: bfloat16 on GPU,
            float32 on CPU).
        vllm_port: port of the started vLLM server (0: a free one).
        vllm_args: more command-line arguments of the started vLLM server.
        request_timeout_s: seconds per request of the ``infra.inference.ChatClient`` talking to a server.
        concurrency: requests in flight at once to a server.
        max_retries: retries of a server request after connection errors, timeouts, 429 and 5xx.
    """

    kind: Literal["transformers", "vllm", "openai"] = "transformers"
    url: str = ""
    served_model: str = ""
    prompt_style: Literal["auto", "chat", "completion"] = "auto"
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    vllm_port: int = 0
    vllm_args: list[str] = field(default_factory=list)
    request_timeout_s: float = 300.0
    concurrency: int = 8
    max_retries: int = 3

    def validate(self):
        if self.concurrency < 1:
            raise ConfigError("key 'backend.concurrency' must be >= 1")
        if self.kind == "openai" and not self.url:
            raise ConfigError("key 'backend.url' is required when backend.kind=openai")


@dataclass
class JudgesConfig:
    """The refusal/harm judges, each one entry of ``use`` (a list in the YAML; ``judges: [...]`` is the
    same as ``judges: {use: [...]}``).

    An entry is ``{kind: K, name: N, headline: B, ...}``: ``kind`` is a judge registered in
    ``evalkit.registry.JUDGES`` (``keyword``, ``xstest-strmatch``, ``harmbench-refusals``, ``llm``,
    ``classifier``, or ``module:Class``), ``name`` its key in results.json (default: the judge's own),
    ``headline`` whether its rates appear in the headline table (default true); every other key is an
    option of that judge, checked against its ``Config`` dataclass when the config loads, e.g.
    ``{kind: llm, protocol: harmbench, url: http://host:8000/v1}``.

    Attributes:
        use: the judges, in the order they run and are reported; the first one's ASR is a suite's ``asr``.
        human_labels: a human-labels file (JSONL prompt/output/label or the XSTest CSV format); the
            ``asr`` suite then scores every judge against it (accuracy, kappa, precision, recall).
        min_judged_share: a suite warns when a judge labels fewer than this share of the outputs.
    """

    LIST_KEY = "use"  # infra.config: a list given for this mapping fills ``use``

    use: list[dict[str, Any]] = field(default_factory=lambda: [{"kind": "keyword"}])
    human_labels: str = ""
    min_judged_share: float = 0.5

    def validate(self):
        if not self.use:
            raise ConfigError("key 'judges.use' is empty; name at least one judge, e.g. [{kind: keyword}]")
        names = []
        for i, entry in enumerate(self.use):
            names.append(judge_entry(entry, f"judges.use[{i}]")[1])
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"key 'judges.use': judge name(s) {dup} used twice; give one entry a 'name'")
        if not 0.0 <= self.min_judged_share <= 1.0:
            raise ConfigError("key 'judges.min_judged_share' must be in [0, 1]")


JUDGE_ENTRY_KEYS = ("kind", "name", "headline")


def judge_entry(entry: dict, key: str = "judges.use[0]") -> tuple[type, str, bool, Any]:
    """(judge class, name, headline, its typed ``Config``) of one ``judges.use`` entry; a ConfigError
    naming ``key`` for an unknown kind or a bad option."""
    from infra.config import build
    from infra.registry import RegistryError

    if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
        raise ConfigError(f"key '{key}': a judge entry is a mapping with a 'kind', got {entry!r}")
    try:
        cls = JUDGES.get(entry["kind"])
    except RegistryError as e:
        raise ConfigError(f"key '{key}.kind': {e}") from None
    headline = entry.get("headline", True)
    if not isinstance(headline, bool):
        raise ConfigError(f"key '{key}.headline': expected bool, got {headline!r}")
    options = {k: v for k, v in entry.items() if k not in JUDGE_ENTRY_KEYS}
    cfg = build(cls.Config, options, prefix=key)
    name = entry.get("name") or cls.default_name(cfg)
    if not isinstance(name, str):
        raise ConfigError(f"key '{key}.name': expected str, got {name!r}")
    return cls, name, headline, cfg


@dataclass
class DataConfig:
    """Prompt sets. Each entry is a JSONL path or ``hub:NAME`` (advbench, harmbench, jailbreakbench, tdc,
    xstest, phtest: fetched when online, or read from a local copy given as ``NAME:PATH``).

    Attributes:
        harmful: harmful prompts (``asr``, ``safebeam``, ``finetune-robustness``; with ``harmless``: the
            probes, the refusal direction and ``self-refusal``).
        harmless: harmless prompts (with ``harmful``: the probes, the refusal direction and ``self-refusal``).
        overrefusal: benign but harmful-looking prompts (``overrefusal``, steering arms), every split.
        completion_harmful: completion-style starts of harmful text, used instead of ``harmful`` (every
            split) when the model takes raw text (``prompt_style`` completion); empty: off.
        limit: first N prompts of each set (0: all).
        split: the prompts' ``split`` field kept: all | train | test (rows without one count as test).
    """

    harmful: str = "evalkit/data/prompts/harmful.jsonl"
    harmless: str = "evalkit/data/prompts/harmless.jsonl"
    overrefusal: str = "evalkit/data/prompts/overrefusal.jsonl"
    completion_harmful: str = "evalkit/data/prompts/completion_harmful.jsonl"
    limit: int = 0
    split: Literal["all", "train", "test"] = "test"


@dataclass
class DirectionConfig:
    """Refusal direction (probes/steering/abliteration), found on the train split of the prompt sets.

    Attributes:
        layer: decoder block index (-1 = 70% depth).
        source: ``refusal`` (mean harmful minus mean harmless activation) or ``tag`` (what the harmfulness
            tag adds to a harmless prompt's activation); abliteration always uses ``refusal``.
        scale: multiple of the direction added or subtracted by steering.
        train_limit: at most this many harmful and harmless prompts per split (0: all).
        steer: the steering arms, each ``<set>_<plus|minus>`` with set harmful, harmless or overrefusal
            (plus = add the direction, the safety intervention; minus = subtract it, the attack).
    """

    layer: int = -1
    source: Literal["refusal", "tag"] = "refusal"
    scale: float = 2.0
    train_limit: int = 0
    steer: list[str] = field(default_factory=lambda: ["harmless_plus", "harmful_minus"])

    def validate(self):
        for arm in self.steer:
            steer_arm(arm)


def steer_arm(arm: str) -> tuple[str, float]:
    """``harmful_plus`` -> (``harmful``, +1.0): the prompt set and the sign of the added direction."""
    which, _, sign = arm.rpartition("_")
    if which not in ("harmful", "harmless", "overrefusal") or sign not in ("plus", "minus"):
        raise ConfigError(
            f"key 'direction.steer': unknown arm {arm!r}; use <harmful|harmless|overrefusal>_"
            "<plus|minus>, e.g. harmful_plus"
        )
    return which, 1.0 if sign == "plus" else -1.0


@dataclass
class CapabilityConfig:
    """lm-eval-harness tasks (``capability`` suite).

    Attributes:
        tasks: lm-eval task names (default: evalkit's offline ``evalkit_tiny_mc`` from ``evalkit/tasks``).
        include_path: a folder of more local task YAMLs (evalkit's offline tasks are always included).
        limit: examples per task (0: all).
        num_fewshot: few-shot examples per prompt.
        batch_size: lm-eval batch size.
    """

    tasks: list[str] = field(default_factory=lambda: ["evalkit_tiny_mc"])
    include_path: str = ""
    limit: int = 0
    num_fewshot: int = 0
    batch_size: int = 8


@dataclass
class FinetuneConfig:
    """Benign finetuning through ``python -m trainer sft`` before re-running ``asr``.

    Attributes:
        data: SFT data, a GSM8K-style chat JSONL (``sft.path``).
        trainer_config: base trainer YAML of the finetune.
        overrides: ``key=value`` overrides of it.
        timeout_s: limit in seconds for the trainer command.
        keep_checkpoints: keep the trainer's megatron checkpoints of the finetune (by default only the
            exported HF folder that the suite evaluates is kept; checkpoints are written without optimizer
            state unless ``overrides`` sets ``train.save_optimizer=true``).
    """

    data: str = "evalkit/data/sft/benign_math.jsonl"
    trainer_config: str = "configs/trainer/sft.yaml"
    overrides: list[str] = field(default_factory=lambda: ["train.train_steps=20"])
    timeout_s: float = 3600.0
    keep_checkpoints: bool = False


@dataclass
class EvalConfig:
    """Everything ``evalkit run`` needs.

    Attributes:
        model: HF folder or trainer checkpoint.
        suites: names registered in ``evalkit.registry.SUITES`` (``evalkit/suites.py``), run in this order.
        out: results folder.
        report: which page ``write_report`` returns (md | html); both are always written.
        decoding: how answers are generated.
        backend: where generations come from.
        judges: the refusal/harm judges.
        data: the prompt sets.
        direction: the refusal direction.
        capability: lm-eval-harness tasks.
        finetune: benign finetuning.
    """

    model: str = ""
    suites: list[str] = field(default_factory=lambda: ["asr"])
    out: str = ""
    report: Literal["md", "html"] = "md"
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    judges: JudgesConfig = field(default_factory=JudgesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    direction: DirectionConfig = field(default_factory=DirectionConfig)
    capability: CapabilityConfig = field(default_factory=CapabilityConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def validate(self):
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown:
            raise ConfigError(f"unknown suite(s) {unknown}; known suites: {', '.join(SUITES)}")
        if not self.suites:
            raise ConfigError("key 'suites' is empty; name at least one of: " + ", ".join(SUITES))
