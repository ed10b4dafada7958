"""``datagen run``: the stages and their executors.

dedup stages (datatrove's exact and MinHash pipelines, see ``datagen/steps/dedup.py``): find the
    duplicates of the whole corpus before stage 1 filters them
stage 1 (datatrove, ``tasks`` tasks): read -> quarantine -> language -> quality -> exact dedup ->
    near dedup -> [PII redaction] -> safety score -> route -> pending JSONL for the LLM routes -> tags ->
    tokenize -> MDS
stage 2 (only with ``llm.enabled``): ``datagen.llm.stage.run_llm_stage`` writes rephrased, refusal,
    moral and aligned buckets from ``corpus/pending``
final: merge each bucket's rank indexes, ``manifest.json``, ``stats.json`` with the balance check.

Locally the stages run one after the other; with ``executor.kind=slurm`` each stage is a Slurm job
(array for stage 1) depending on the previous one, and the final stage runs as a one-task job.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from datagen import remote
from datagen.config import DatagenConfig
from datagen.remote import is_url
from infra.config import ConfigError, flatten, load_config, save_config, to_dict
from infra.folders import CorpusFolder
from infra.log import get_logger
from infra.marker import Marker, path_fingerprint, value_fingerprint

log = get_logger(__name__)
STAGE1_BUCKETS = ("raw", "tagged")


class DatagenError(RuntimeError):
    """A run that must not be trusted (e.g. the balance check failed)."""


def _input_path(cfg: DatagenConfig) -> Path | str:
    """The input file or folder, checked to exist and hold files; an fsspec URL stays a string."""
    from infra.paths import default_corpus

    if is_url(cfg.input.path):
        remote.list_input(cfg.input.path, cfg.input.glob)
        return cfg.input.path
    p = Path(cfg.input.path) if cfg.input.path else default_corpus()
    if not p.exists():
        raise ConfigError(f"input.path: {p} does not exist")
    if p.is_dir():
        files = p.glob(cfg.input.glob) if cfg.input.glob else p.rglob("*")
        if not any(f.is_file() for f in files):
            raise ConfigError(f"input.path: {p} holds no files matching input.glob={cfg.input.glob!r}")
    return p


# ------------------------------------------------------------------------------------------ prepare
TOKENIZER_MARKER = "datagen-tokenizer"
CLASSIFIER_MARKER = "datagen-classifier"


def _tokenizer_parts(cfg: DatagenConfig) -> dict[str, str]:
    return {
        "input": (
            remote.listing_fingerprint(cfg.input.path, cfg.input.glob)
            if is_url(cfg.input.path)
            else path_fingerprint(_input_path(cfg))
        ),
        "settings": value_fingerprint({"vocab_size": cfg.tokenizer.vocab_size, "text_field": cfg.input.text_field}),
    }


def _beside(path: Path, parts: dict[str, str]) -> Path:
    """The folder next to ``path`` for an artefact trained for ``parts`` (never the same as ``path``)."""
    return path.with_name(f"{path.name}@{value_fingerprint(parts)[:12]}")


def resolve_tokenizer(cfg: DatagenConfig) -> Path:
    """The tokenizer folder this config uses: ``tokenizer.path``, or, when ``train_if_missing`` and the
    tokenizer there was trained here on another input or with other settings, a new folder beside it
    (``<path>@<fingerprint>``). A trained tokenizer is never replaced."""
    src = Path(cfg.tokenizer.path)
    if not cfg.tokenizer.train_if_missing or cfg.input.format != "jsonl" or not src.exists():
        return src
    marker = Marker(src, TOKENIZER_MARKER)
    if not (marker.path.is_file() or (src / "datagen_trained_on.json").is_file()):
        return src  # the user's own tokenizer: used as it is
    parts = _tokenizer_parts(cfg)
    if marker.check(parts, outputs=[src / "tokenizer.json"]):
        return src
    return _beside(src, parts)


def _ensure_tokenizer(cfg: DatagenConfig, corpus: Path) -> tuple[Path, dict]:
    """Copy the tokenizer (with the tag token) into ``corpus/tokenizer``; train it first if asked.
    Returns the source folder and what the manifest records of the copy (``tokenizer_info``).

    A tokenizer this step trained carries a completion marker. For another input or other settings a
    new one is trained beside it (``resolve_tokenizer``) with a warning; the old one is kept.
    """
    from infra.corpus import file_sha256
    from infra.tokenizer import load_tokenizer, tag_id

    src = resolve_tokenizer(cfg)
    if cfg.tokenizer.train_if_missing and src != Path(cfg.tokenizer.path):
        log.warning(
            "tokenizer.path %s was trained on another input or with other settings (%s); using %s "
            "instead (trained now if missing; the old tokenizer is kept)",
            cfg.tokenizer.path,
            Marker(Path(cfg.tokenizer.path), TOKENIZER_MARKER).check(_tokenizer_parts(cfg)).reason,
            src,
        )
    if src.exists() and cfg.tokenizer.train_if_missing:
        marker = Marker(src, TOKENIZER_MARKER)
        if marker.path.is_file() and not marker.check(_tokenizer_parts(cfg), outputs=[src / "tokenizer.json"]):
            raise ConfigError(f"{src}: a tokenizer trained for another input is in the way; remove it")
    if not src.exists() and cfg.tokenizer.train_if_missing:
        from datagen.tokenizer_train import TrainTokenizerConfig, train_tokenizer

        if cfg.input.format != "jsonl" or is_url(cfg.input.path):
            raise ConfigError(
                "tokenizer.train_if_missing trains on local JSONL input only; train one with "
                "`python -m datagen train-tokenizer` (e.g. on a local sample) and set tokenizer.path"
            )
        log.info("training a %d-entry BPE tokenizer on %s -> %s", cfg.tokenizer.vocab_size, _input_path(cfg), src)
        train_tokenizer(
            TrainTokenizerConfig(
                input=str(_input_path(cfg)),
                text_field=cfg.input.text_field,
                output=str(src),
                vocab_size=cfg.tokenizer.vocab_size,
            )
        )
        Marker(src, TOKENIZER_MARKER).write(_tokenizer_parts(cfg), input=str(_input_path(cfg)))
    tok = load_tokenizer(src if src.exists() else cfg.tokenizer.path, add_tag=True)
    dst = CorpusFolder(corpus).tokenizer
    tmp = corpus / "tokenizer.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tok.save_pretrained(str(tmp))
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    info = {
        "sha256": file_sha256(dst / "tokenizer.json"),
        "vocab_size": len(tok),
        "eos_id": int(tok.eos_token_id),
        "tag_id": tag_id(tok),
    }
    return src, info


def _labels_path(cfg: DatagenConfig) -> str:
    from datagen.classifier import default_labels

    return cfg.score.labels or str(default_labels())


def _classifier_parts(cfg: DatagenConfig, labels: str) -> dict[str, str]:
    from datagen.classifier import training_params

    sc = cfg.score
    return {
        "labels": path_fingerprint(labels),
        "backend": sc.backend,
        "settings": value_fingerprint({"params": training_params(sc.backend), "score_field": "score"}),
    }


def resolve_classifier(cfg: DatagenConfig) -> str | None:
    """The classifier folder this config uses.

    ``shipped`` is the classifier that ships with the package (``datagen/data/safety_classifier``,
    trained on the public labels in ``datagen/data/safety_labels``). With ``train_if_missing``, a folder
    that holds a classifier trained on other labels or with other settings is never replaced: the one
    trained for this config goes beside it (``<folder>@<fingerprint>``).
    """
    from datagen.classifier import shipped_classifier

    sc = cfg.score
    if sc.classifier is None:
        return None
    if sc.classifier == "shipped":
        return str(shipped_classifier())
    folder = Path(sc.classifier)
    if not sc.train_if_missing or not (folder / "classifier.json").is_file():
        return sc.classifier
    labels = _labels_path(cfg)
    parts = _classifier_parts(cfg, labels)
    marker = Marker(folder, CLASSIFIER_MARKER)
    if marker.path.is_file():
        same = bool(marker.check(parts, outputs=[folder / "classifier.json"]))
    else:  # the user's own classifier: kept unless it records other labels than this config names
        recorded = json.loads((folder / "classifier.json").read_text()).get("labels_sha256")
        same = not recorded or recorded == path_fingerprint(labels)
    return sc.classifier if same else str(_beside(folder, parts))


def _ensure_classifier(cfg: DatagenConfig) -> str | None:
    """Train the safety classifier when ``score.train_if_missing`` and none is there for this config
    (``resolve_classifier`` says where); returns the folder the score step reads."""
    sc = cfg.score
    path = resolve_classifier(cfg)
    if path is None:
        return None
    folder = Path(path)
    if (folder / "classifier.json").is_file():
        return path
    if not sc.train_if_missing:
        raise ConfigError(
            f"score.classifier: {sc.classifier} has no classifier.json (train one with "
            "`python -m datagen train-classifier`, use the shipped one with score.classifier=shipped, "
            "or set score.train_if_missing=true)"
        )
    from datagen.classifier import TrainClassifierConfig, train_classifier

    labels = _labels_path(cfg)
    if path != sc.classifier:
        log.warning(
            "score.classifier %s was trained on other labels or with other settings; training the "
            "classifier for this config in %s (the old one is kept)",
            sc.classifier,
            path,
        )
    log.info("training a %s safety classifier on %s -> %s", sc.backend, labels, path)
    meta = train_classifier(TrainClassifierConfig(labels=labels, output=path, backend=sc.backend))
    meta["trained_by"] = "train_if_missing"
    (folder / "classifier.json").write_text(json.dumps(meta, indent=2))
    Marker(folder, CLASSIFIER_MARKER).write(_classifier_parts(cfg, labels))
    log.info("held-out metrics: %s", {k: v for k, v in meta["metrics"].items() if k != "confusion_matrix"})
    return path


def _check_writable(corpus: Path) -> None:
    """The output folder exists (or is made) and takes a file: checked before any work starts."""
    try:
        corpus.mkdir(parents=True, exist_ok=True)
        probe = corpus / ".write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output: cannot write to {corpus} ({e.strerror or e})") from None


def _check_same_config(cfg: DatagenConfig, corpus: Path) -> None:
    """Resuming into a folder written with other settings would mix two corpora: refuse it."""
    saved = CorpusFolder(corpus).config
    if not saved.is_file():
        return
    try:
        old = load_config(DatagenConfig, saved)
    except ConfigError as e:
        raise ConfigError(
            f"{corpus} holds a config this version cannot read ({e}); use another output folder"
        ) from None
    a, b = flatten(to_dict(old)), flatten(to_dict(cfg))
    # where and how the work runs may change between attempts; what it produces may not. The number
    # of tasks decides which files each rank reads, so it must stay the same too
    operational = (
        "executor.",
        "llm.server.",
        "llm.max_concurrency",
        "llm.request_timeout",
        "llm.max_retries",
        "llm.retry_backoff",
    )
    diff = sorted(
        k for k in set(a) | set(b) if a.get(k) != b.get(k) and (k == "executor.tasks" or not k.startswith(operational))
    )
    if diff:
        raise ConfigError(
            f"{corpus} was written with another config (differs in: {', '.join(diff)}); "
            "resume with the same config or choose another output folder"
        )


# ------------------------------------------------------------------------------------------ stage 1
def _dropped_writer(cfg: DatagenConfig, corpus: Path, name: str):
    """The writer of ``dropped/<name>/`` for a filter's drops (None with ``filters.write_dropped`` off)."""
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    if not cfg.filters.write_dropped:
        return None
    # a user's "module:Class" filter writes to dropped/module.Class: no ':' in folder names
    folder = name.replace(":", ".")
    return JsonlWriter(str(corpus / "dropped" / folder), output_filename="${rank}.jsonl", compression=None)


def _front_steps(cfg: DatagenConfig, corpus: Path, scratch: Path | None = None) -> tuple[list[PipelineStep], list[str]]:
    """Read, quarantine and filter: the steps every stage that reads the input runs first.

    The dedup stages run these too (datatrove's dedup filters name documents by their position in a
    task's stream, so the signatures must be taken on exactly the documents stage 1 filters). With
    ``scratch`` the side outputs (quarantine files) go there and dropped documents are not written.
    """

    from datagen.steps import (
        QuarantineStep,
        QuarantiningJsonlReader,
        QuarantiningParquetReader,
        QuarantiningWarcReader,
        build_filter,
    )

    if is_url(cfg.input.path):  # listed once by run(); here only whether it names a folder or one file
        folder, glob = remote.reader_location(cfg.input.path, cfg.input.glob)
    else:
        inp = _input_path(cfg)
        folder, glob = (str(inp), cfg.input.glob) if inp.is_dir() else (str(inp.parent), inp.name)
    reader_cls = {
        "jsonl": QuarantiningJsonlReader,
        "parquet": QuarantiningParquetReader,
        "warc": QuarantiningWarcReader,
    }[cfg.input.format]
    steps: list[PipelineStep] = [
        reader_cls(
            folder,
            glob_pattern=glob,
            text_key=cfg.input.text_field,
            id_key=cfg.input.id_field,
            limit=cfg.input.limit,
            raw_cut=cfg.input.raw_cut,
            progress_s=cfg.executor.progress_s,
            **({"split_files": True} if cfg.input.split_files else {}),
        )
    ]

    def dropped_writer(name: str):
        return None if scratch is not None else _dropped_writer(cfg, corpus, name)

    labels = ["read"]
    extract = cfg.input.html_extraction
    quarantine = (scratch if scratch is not None else corpus) / "quarantine"
    if extract == "trafilatura" or (extract == "auto" and cfg.input.format == "warc"):
        from datagen.steps.extract import TrafilaturaWithDropped

        # placeholders (empty text) must reach the quarantine step untouched, so extraction comes after it
        steps.append(QuarantineStep(str(quarantine), 0, cfg.input.raw_cut))
        labels.append("quarantine")
        steps.append(TrafilaturaWithDropped(dropped_writer("html_extraction"), favour_precision=True, timeout=5.0))
        labels.append("filter:html_extraction")
        steps.append(QuarantineStep(str(quarantine / "extracted"), cfg.input.max_chars, cfg.input.raw_cut))
        labels.append("quarantine:extracted")
    else:
        steps.append(QuarantineStep(str(quarantine), cfg.input.max_chars, cfg.input.raw_cut))
        labels.append("quarantine")

    # language, quality filters, exact dedup: each built from datagen.steps.filters.FILTERS by name
    for name, kwargs, key in cfg.filters.steps():
        try:
            steps.append(build_filter(name, kwargs, dropped_writer(name), key))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        labels.append(f"filter:{name}")
    return steps, labels


def build_stage1(
    cfg: DatagenConfig, corpus: Path, classifier: str | None = None
) -> tuple[list[PipelineStep], list[str]]:
    """The stage-1 datatrove pipeline and a label per step (used to name counts in stats.json).
    ``classifier``: the folder the score step reads (default: ``resolve_classifier(cfg)``)."""
    from datagen.steps import PendingWriter, Router, SafetyScorer, TagInjector, TokenizeToBuckets

    steps, labels = _front_steps(cfg, corpus)
    steps += _dedup_filters(cfg, corpus, dropped=True)
    labels += [f"filter:{n}" for n in _dedup_filter_names(cfg)]
    if cfg.pii.enabled:
        from datagen.steps.pii import PIIRedactor

        p = cfg.pii
        steps.append(PIIRedactor(p.emails, p.ips, p.only_public_ips, p.email_replacement, p.ip_replacement))
        labels.append("pii")
    clf = classifier if classifier is not None else resolve_classifier(cfg)
    steps.append(SafetyScorer(clf, cfg.score.label_field, cfg.score.combine, cfg.score.batch_size))
    labels.append("score")
    steps.append(Router(cfg.route.rephrase_min, cfg.route.refusal_min))
    labels.append("route")
    steps.append(PendingWriter(str(corpus / "pending")))
    labels.append("pending")
    if cfg.tag.enabled:
        steps.append(TagInjector(cfg.tag.p, cfg.tag.min_score, cfg.tag.seed))
        labels.append("tag")
    steps.append(
        TokenizeToBuckets(
            str(corpus), buckets=STAGE1_BUCKETS, batch_size=cfg.tokenizer.batch_size, compression=cfg.compression
        )
    )
    labels.append("tokenize")
    return steps, labels


# ------------------------------------------------------------------------------------ corpus dedup
def _dedup_filter_names(cfg: DatagenConfig) -> list[str]:
    f = cfg.filters
    return (["exact_dedup"] if f.corpus_exact_dedup else []) + (["near_dedup"] if f.near_dedup.enabled else [])


def _dedup_filters(cfg: DatagenConfig, corpus: Path, dropped: bool, names: list[str] | None = None) -> list:
    """datatrove's dedup filters reading what the dedup stages found (``names``: which; default all)."""
    from datagen.steps.dedup import CorpusExactDedupFilter, CorpusNearDedupFilter, exact_config

    out = []
    for name in _dedup_filter_names(cfg) if names is None else names:
        writer = _dropped_writer(cfg, corpus, name) if dropped else None
        if name == "exact_dedup":
            out.append(CorpusExactDedupFilter(str(corpus / "dedup" / "exact" / "dups"), exact_config(), writer))
        else:
            out.append(CorpusNearDedupFilter(str(corpus / "dedup" / "near" / "remove"), exclusion_writer=writer))
    return out


def build_dedup_stages(cfg: DatagenConfig, corpus: Path) -> list[tuple[str, list, int]]:
    """The corpus-wide dedup stages that run before stage 1, as ``(name, pipeline, tasks)`` in order
    (``datagen/steps/dedup.py`` has the picture). Empty unless the config asks for corpus dedup."""
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupSignature, ExactFindDedups
    from datatrove.pipeline.dedup.minhash import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )

    from datagen.steps.dedup import exact_config, minhash_config

    f, tasks, root = cfg.filters, cfg.executor.tasks, corpus / "dedup"
    stages = []
    if f.corpus_exact_dedup:
        front, _ = _front_steps(cfg, corpus, scratch=root / "scratch" / "exact")
        stages.append(
            ("dedup_exact_sig", [*front, ExactDedupSignature(str(root / "exact" / "sigs"), exact_config())], tasks)
        )
        stages.append(
            (
                "dedup_exact_find",
                [ExactFindDedups(str(root / "exact" / "sigs"), str(root / "exact" / "dups"), exact_config())],
                1,
            )
        )
    if f.near_dedup.enabled:
        nd = f.near_dedup
        mh = minhash_config(nd.ngrams, nd.buckets, nd.hashes_per_bucket, nd.seed)
        front, _ = _front_steps(cfg, corpus, scratch=root / "scratch" / "near")
        # the exact filter first, as in stage 1: the signatures are of the documents the near filter sees
        front += _dedup_filters(cfg, corpus, dropped=False, names=["exact_dedup"] if f.corpus_exact_dedup else [])
        near = root / "near"
        stages.append(
            ("dedup_near_sig", [*front, MinhashDedupSignature(str(near / "sigs"), mh, language=nd.language)], tasks)
        )
        stages.append(
            (
                "dedup_near_buckets",
                [MinhashDedupBuckets(str(near / "sigs"), str(near / "buckets"), config=mh)],
                nd.buckets,
            )
        )
        stages.append(
            ("dedup_near_cluster", [MinhashDedupCluster(str(near / "buckets"), str(near / "remove"), config=mh)], 1)
        )
    return stages


def make_executor(cfg: DatagenConfig, pipeline: list, logging_dir: Path, tasks: int, name: str, depends=None):
    """A datatrove executor for one stage, as ``cfg.executor`` describes."""
    ex = cfg.executor
    if ex.kind == "local":
        from datatrove.executor import LocalPipelineExecutor

        workers = min(ex.workers if ex.workers > 0 else tasks, tasks)
        return LocalPipelineExecutor(
            pipeline=pipeline, tasks=tasks, workers=workers, logging_dir=str(logging_dir), depends=depends
        )
    from datatrove.executor import SlurmPipelineExecutor

    return SlurmPipelineExecutor(
        pipeline=pipeline,
        tasks=tasks,
        workers=ex.workers,
        time=ex.time,
        partition=ex.partition,
        cpus_per_task=ex.cpus_per_task,
        mem_per_cpu_gb=ex.mem_per_cpu_gb,
        job_name=f"{ex.job_name}-{name}",
        logging_dir=str(logging_dir),
        slurm_logs_folder=ex.logs or str(logging_dir / "slurm"),
        venv_path=ex.venv_path,
        sbatch_args=dict(ex.sbatch_args) or None,
        depends=depends,
        depends_job_id=ex.dependency if depends is None else None,
    )


# ------------------------------------------------------------------------------------- later stages
class LLMStageStep(PipelineStep):
    """Runs ``datagen.llm.stage.run_llm_stage`` as a one-task stage; its stats go to ``logs/llm_stats.json``."""

    name = "🤖 LLM stage"
    type = "🤖 - LLM"

    def __init__(self, cfg_dict: dict, corpus_dir: str):
        super().__init__()
        self.cfg_dict = cfg_dict
        self.corpus_dir = corpus_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        try:
            from datagen.llm.stage import run_llm_stage
        except ImportError as e:
            raise DatagenError(f"llm.enabled is true but the LLM stage is not available: {e}") from e
        from infra.config import build
        from infra.tokenizer import load_tokenizer

        cfg = build(DatagenConfig, self.cfg_dict)
        folder = CorpusFolder(self.corpus_dir)
        tok = load_tokenizer(folder.tokenizer)
        stats = run_llm_stage(cfg, Path(self.corpus_dir), tok) or {}
        (folder.logs / "llm_stats.json").write_text(json.dumps(stats, indent=2))
        yield from data or []


class FinalizeStep(PipelineStep):
    """Merges bucket indexes and writes manifest.json and stats.json (the final, one-task stage)."""

    name = "📦 Finalize corpus"
    type = "💽 - WRITER"

    def __init__(self, cfg_dict: dict, corpus_dir: str, stage1_labels: list[str]):
        super().__init__()
        self.cfg_dict = cfg_dict
        self.corpus_dir = corpus_dir
        self.stage1_labels = stage1_labels

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from infra.config import build

        finalize(build(DatagenConfig, self.cfg_dict), Path(self.corpus_dir), self.stage1_labels)
        yield from data or []


def finalize(cfg: DatagenConfig, corpus: Path, stage1_labels: list[str]) -> dict:
    """Merge every bucket's index, write manifest.json and stats.json; raise if the balance fails."""
    from datagen.stats import collect_stats
    from infra.corpus import BucketInfo, Manifest, TokenizerInfo, merge_bucket_index

    folder = CorpusFolder(corpus)
    llm_path = folder.logs / "llm_stats.json"
    llm_stats = json.loads(llm_path.read_text()) if llm_path.is_file() else None
    bucket_names = sorted({p.name for p in folder.shards.glob("*") if p.is_dir()}, key=_bucket_order)
    samples = {b: merge_bucket_index(corpus, b) for b in bucket_names}
    stats = collect_stats(cfg, corpus, stage1_labels, samples, llm_stats)
    folder.stats.write_text(json.dumps(stats, indent=2))
    tok = _tokenizer_info(folder)
    manifest = Manifest(
        tokenizer=TokenizerInfo(path="tokenizer", **tok),
        buckets={b: BucketInfo(documents=v["documents"], tokens=v["tokens"]) for b, v in stats["buckets"].items()},
        config=to_dict(cfg),
    )
    manifest.save(corpus)
    if not stats["balance"]["ok"]:
        raise DatagenError(f"balance check failed, see {folder.stats}: {stats['balance']}")
    if is_url(cfg.output):
        remote.upload_corpus(corpus, cfg.output)
    return stats


def _tokenizer_info(folder: CorpusFolder) -> dict:
    """sha256, vocab_size, eos_id and tag_id of the corpus tokenizer for the manifest: as ``datagen run``
    recorded them when it copied the tokenizer (``logs/prepared.json``) while tokenizer.json is unchanged,
    else from the tokenizer itself."""
    from infra.corpus import file_sha256
    from infra.tokenizer import load_tokenizer, tag_id

    sha = file_sha256(folder.tokenizer / "tokenizer.json")
    prepared = folder.logs / "prepared.json"
    info = json.loads(prepared.read_text()).get("tokenizer_info") if prepared.is_file() else None
    if info and info.get("sha256") == sha:
        return info
    tok = load_tokenizer(folder.tokenizer)
    return {"sha256": sha, "vocab_size": len(tok), "eos_id": int(tok.eos_token_id), "tag_id": tag_id(tok)}


def _bucket_order(name: str):
    from infra.corpus import BUCKETS

    return (BUCKETS.index(name) if name in BUCKETS else len(BUCKETS), name)


# ---------------------------------------------------------------------------------------------- run
def corpus_folder(cfg: DatagenConfig) -> Path:
    """Where the corpus is built: ``output``, or for a remote ``output`` its staging folder."""
    return remote.staging_folder(cfg.output, cfg.output_staging) if is_url(cfg.output) else Path(cfg.output)


def run(cfg: DatagenConfig) -> dict | None:
    """Run every stage. Returns the stats (local) or None after submitting Slurm jobs.

    Raises ``datagen.procs.OutputError`` (one line naming the path) when the output cannot be written:
    a full disk, no permission, a read-only file system.
    """
    from datagen.procs import OutputError, die_with_parent, quiet_write_errors, write_error

    corpus = corpus_folder(cfg)
    if cfg.executor.kind == "local":
        die_with_parent()  # a killed run leaves no datatrove manager or worker behind
        quiet_write_errors()
    try:
        return _run(cfg, corpus)
    except (ConfigError, DatagenError):
        raise
    except Exception as e:
        message = write_error(e, corpus)
        if message is None:
            raise
        raise OutputError(message) from e


def _run(cfg: DatagenConfig, corpus: Path) -> dict | None:
    _input_path(cfg)  # a missing or empty input fails before anything is made
    if is_url(cfg.output):
        remote.check_writable(cfg.output)
        log.info("building the corpus in %s; it is uploaded to %s at the end", corpus, cfg.output)
    _check_writable(corpus)
    _check_same_config(cfg, corpus)
    # every stage is built first (the steps load nothing yet): a filter that cannot be built fails here,
    # before a tokenizer or classifier is trained and before anything is written
    steps, labels = build_stage1(cfg, corpus, resolve_classifier(cfg))
    stages = build_dedup_stages(cfg, corpus)
    tokenizer, tokenizer_info = _ensure_tokenizer(cfg, corpus)
    classifier = _ensure_classifier(cfg)
    save_config(cfg, CorpusFolder(corpus).config)
    prepared = {"tokenizer": str(tokenizer), "classifier": classifier, "tokenizer_info": tokenizer_info}
    (CorpusFolder(corpus).logs).mkdir(parents=True, exist_ok=True)
    (CorpusFolder(corpus).logs / "prepared.json").write_text(json.dumps(prepared, indent=2))
    log.info("tokenizer: %s; safety classifier: %s", tokenizer, classifier)
    logs = CorpusFolder(corpus).logs
    dedup = []
    for name, pipeline, n in stages:
        dedup.append(make_executor(cfg, pipeline, logs / name, n, name, depends=dedup[-1] if dedup else None))
    stage1 = make_executor(
        cfg, steps, logs / "stage1", cfg.executor.tasks, "stage1", depends=dedup[-1] if dedup else None
    )
    last = stage1
    cfg_dict = to_dict(cfg)
    if cfg.llm.enabled:
        last = make_executor(cfg, [LLMStageStep(cfg_dict, str(corpus))], logs / "llm", 1, "llm", depends=last)
    final = make_executor(cfg, [FinalizeStep(cfg_dict, str(corpus), labels)], logs / "final", 1, "final", depends=last)
    if cfg.executor.kind == "slurm":
        final.run()  # submits the chain of dependencies
        log.info("submitted; the corpus will be in %s", corpus)
        return None
    for ex in dedup:
        ex.run()
    stage1.run()
    if cfg.llm.enabled:
        last.run()
    # the final stage is cheap and must reflect the current shards: run it every time
    return finalize(cfg, corpus, labels)
