"""The LLM stage of ``datagen run``: pending documents in, rephrased/refusal/moral/aligned buckets out.

Inputs (written by stage 1): ``corpus/pending/rephrase/*.jsonl`` (scores 1-3) and
``corpus/pending/refusal/*.jsonl`` (scores 4-5), datatrove JSONL documents. Outputs:

* MDS buckets ``rephrased``, ``refusal``, ``moral``, ``aligned`` (via ``datagen.steps.tokenize.write_documents``);
* ``corpus/quarantine/llm.jsonl``: one JSON line per output that could not be used (source, id, bucket,
  reason, raw answer cut);
* ``corpus/llm/<transformation>/out/*.jsonl``: every document with every request/response pair sent
  for it; ``checkpoints/`` and ``logs/`` make a re-run resume;
* ``corpus/llm/stats.json``: documents in/out per transformation, bucket counts, quarantine reasons.

The bucket of an output is fixed by the folder its input came from (stage 1 routed it by score);
nothing the model answers can move a document to another bucket.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path

from datagen.llm.config import LLMConfig, ServerConfig
from datagen.llm.rollouts import RolloutSettings, aligned_rollout, refusal_rollout, rephrase_rollout
from datagen.llm.runner import Endpoint, LLMStageError, run_transformation
from infra.log import get_logger

log = get_logger(__name__)

__all__ = ["run_llm_stage", "LLMStageError", "endpoint_for", "settings_from", "resolve_model"]


def resolve_model(model: str) -> str:
    """``smollm2`` is the prepared SmolLM2-135M-Instruct folder (prepared on first use)."""
    if model == "smollm2":
        from infra.models import prepare_smollm2

        return str(prepare_smollm2())
    return model


@contextmanager
def endpoint_for(llm: LLMConfig, work_dir: Path):
    """Yield an ``Endpoint``: the configured URL, or a vLLM server started here and stopped afterwards.

    A started server's PID, URL and log path are written to ``work_dir/server.json`` while it runs.
    """
    sc: ServerConfig = llm.server
    kw = dict(
        api_key=sc.api_key,
        max_concurrency=llm.max_concurrency,
        request_timeout=llm.request_timeout,
        max_retries=llm.max_retries,
        retry_backoff=llm.retry_backoff,
    )
    if sc.url:
        from infra.inference import wait_for_endpoint

        served = wait_for_endpoint(sc.url, timeout=30.0)
        model = sc.served_model_name or (served[0] if served else resolve_model(sc.model))
        root = sc.url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        yield Endpoint(root_url=root, model=model, **kw)
        return
    from infra.inference import VLLMServer

    model = resolve_model(sc.model)
    work_dir.mkdir(parents=True, exist_ok=True)
    server = VLLMServer(
        model,
        port=sc.port,
        dtype=sc.dtype,
        max_model_len=sc.max_model_len,
        max_num_seqs=sc.max_num_seqs,
        gpu_memory_utilization=sc.gpu_memory_utilization,
        cpu_kv_cache_gib=sc.cpu_kv_cache_gib,
        enforce_eager=sc.enforce_eager,
        served_model_name=sc.served_model_name or None,
        tensor_parallel_size=sc.tensor_parallel_size,
        extra_args=sc.extra_args,
        log_file=work_dir / "server.log",
        startup_timeout=sc.startup_timeout,
    )
    with server:
        (work_dir / "server.json").write_text(
            json.dumps(
                {"pid": server.pid, "url": server.base_url, "model": server.model_name, "log": str(server.log_file)}
            )
        )
        try:
            yield Endpoint(root_url=server.root_url, model=server.model_name, **kw)
        finally:
            (work_dir / "server.json").unlink(missing_ok=True)


def settings_from(llm: LLMConfig, raw_cut: int = 2000) -> RolloutSettings:
    g = llm.generation
    return RolloutSettings(
        seed=llm.seed,
        attempts=llm.attempts,
        styles=list(llm.styles),
        sampling={
            "annotate": g.annotate.params(),
            "rephrase": g.rephrase.params(),
            "refusal": g.refusal.params(),
            "moral": g.moral.params(),
            "aligned": g.aligned.params(),
        },
        max_input_chars=llm.max_input_chars,
        min_output_chars=llm.min_output_chars,
        accept_truncated=llm.accept_truncated,
        prefill=llm.prefill,
        seed_requests=llm.seed_requests,
        max_score={b: llm.max_score_for(b) for b in ("rephrased", "refusal", "moral", "aligned")},
        raw_cut=raw_cut,
    )


def _classifier_context(settings: RolloutSettings, classifier_path: str | None, classifier=None) -> dict:
    """datatrove shared context, built inside the task (the executor deep-copies the pipeline)."""
    clf = classifier
    if clf is None and classifier_path:
        from datagen.classifier import load_classifier

        clf = load_classifier(classifier_path)
    return {"settings": settings, "classifier": clf}


def _pending_files(corpus_dir: Path, route: str) -> list[Path]:
    return sorted((corpus_dir / "pending" / route).glob("*.jsonl"))


def _count_lines(files: list[Path]) -> int:
    n = 0
    for f in files:
        with open(f, encoding="utf-8") as fh:
            n += sum(1 for line in fh if line.strip())
    return n


def _source_score(rec: dict) -> int:
    md = rec.get("metadata") or {}
    for k in ("safety_score", "score"):
        if k in md and md[k] is not None:
            return int(md[k])
    return -1


def aligned_documents(llm: LLMConfig) -> list:
    from datatrove.data import Document

    return [
        Document(text=topic, id=f"aligned-{i:04d}-{k}", metadata={"topic_index": i})
        for i, topic in enumerate(llm.aligned_topics)
        for k in range(llm.aligned_per_topic)
    ]


def run_llm_stage(cfg, corpus_dir: str | Path, tokenizer, classifier=None) -> dict:
    """Run the LLM transformations and write their buckets; return stats.

    Args:
        cfg: the ``datagen run`` config (``cfg.llm`` is an ``LLMConfig``; ``cfg.score.classifier`` is
            the default rescoring classifier).
        corpus_dir: the corpus folder (reads ``pending/``, writes ``shards/``, ``quarantine/``, ``llm/``).
        tokenizer: HF tokenizer with the tag token (``infra.tokenizer.load_tokenizer``).
        classifier: optional object with ``predict(texts) -> list[int]`` used for rescoring instead of
            loading the configured classifier folder.
    Returns:
        ``{"transformations": {name: {"in", "out"}}, "buckets": {bucket: {"documents", "tokens"}},
        "quarantined": {bucket: {reason: n}}, "styles": {style: n}, "requests", "seconds"}``.
    Raises:
        LLMStageError: a transformation failed (with the count done) or lost documents.
    """
    from datatrove.pipeline.readers import JsonlReader

    from datagen.steps.tokenize import write_documents

    llm: LLMConfig = cfg.llm
    corpus_dir = Path(corpus_dir)
    work = corpus_dir / "llm"
    work.mkdir(parents=True, exist_ok=True)
    settings = settings_from(llm, raw_cut=getattr(getattr(cfg, "input", None), "raw_cut", 2000))
    clf_path = None
    if llm.rescore and classifier is None:
        from datagen.config import DatagenConfig
        from datagen.pipeline import resolve_classifier

        clf_path = llm.classifier or None
        if clf_path is None and isinstance(cfg, DatagenConfig):
            clf_path = resolve_classifier(cfg)
        elif clf_path is None and getattr(cfg, "score", None) is not None:
            clf_path = cfg.score.classifier
        if clf_path == "shipped":
            from datagen.classifier import shipped_classifier

            clf_path = str(shipped_classifier())
        if not clf_path:
            raise LLMStageError(
                "llm.rescore is true but no classifier is configured: set llm.classifier or "
                "score.classifier, or llm.rescore=false"
            )
    context = partial(_classifier_context, settings, clf_path, classifier if llm.rescore else None)

    plan = []  # (name, source, n_in, rollout)
    for name, bucket, rollout in (
        ("rephrase", "rephrased", rephrase_rollout),
        ("refusal", "refusal", partial(refusal_rollout, moral="moral" in llm.buckets)),
    ):
        files = _pending_files(corpus_dir, name)
        if bucket in llm.buckets and files:
            n_in = _count_lines(files)
            limit = llm.max_documents_per_route
            if 0 <= limit < n_in:  # a trial on a few documents (the demo); the rest stay pending
                log.info("LLM stage: %s limited to the first %d of %d pending documents", name, limit, n_in)
                n_in = limit
            plan.append(
                (
                    name,
                    JsonlReader(
                        str(corpus_dir / "pending" / name), glob_pattern="*.jsonl", compression=None, limit=limit
                    ),
                    n_in,
                    rollout,
                )
            )
    if "aligned" in llm.buckets and llm.aligned_topics:
        docs = aligned_documents(llm)
        plan.append(("aligned", docs, len(docs), aligned_rollout))

    t0 = time.time()
    results: dict[str, dict[str, dict]] = {}
    stats = {"transformations": {}, "buckets": {}, "quarantined": {}, "styles": {}, "requests": 0}
    if any(n for _, _, n, _ in plan):  # no server is started when there is nothing to send
        with endpoint_for(llm, work) as ep:
            log.info("LLM stage: endpoint %s, model %s", ep.root_url, ep.model)
            for name, source, n_in, rollout in plan:
                results[name] = run_transformation(
                    name,
                    source,
                    n_in,
                    rollout,
                    ep,
                    work,
                    shared_context=context,
                    records_per_chunk=llm.records_per_chunk,
                )
                stats["transformations"][name] = {"in": n_in, "out": len(results[name])}

    # ---- outputs -> buckets / quarantine (rewritten whole on every run: idempotent)
    items, quarantine = [], []
    for name, docs in results.items():
        for doc_id, rec in sorted(docs.items()):
            res = (rec.get("metadata") or {}).get("llm") or []
            res = res[0] if res else {"outputs": [], "exchanges": []}
            stats["requests"] += len(res.get("exchanges", []))
            for o in res.get("outputs", []):
                bucket = o["bucket"]
                if o["status"] == "ok":
                    score = 0 if bucket == "aligned" else _source_score(rec)
                    out_id = f"{doc_id}:{bucket}"
                    items.append((o["text"], out_id, max(score, 0), bucket))
                    if o.get("style"):
                        stats["styles"][o["style"]] = stats["styles"].get(o["style"], 0) + 1
                else:
                    q = stats["quarantined"].setdefault(bucket, {})
                    q[o["reason"]] = q.get(o["reason"], 0) + 1
                    quarantine.append(
                        {
                            "source": f"llm/{name}",
                            "id": doc_id,
                            "bucket": bucket,
                            "reason": o["reason"],
                            "problems": o.get("problems", []),
                            "raw": o.get("raw", ""),
                        }
                    )
    qdir = corpus_dir / "quarantine"
    qdir.mkdir(parents=True, exist_ok=True)
    with open(qdir / "llm.jsonl", "w", encoding="utf-8") as f:
        for q in quarantine:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    counts = write_documents(
        corpus_dir, tokenizer, items, rank=0, compression=getattr(cfg, "compression", None), reset_buckets=llm.buckets
    )
    for b in llm.buckets:
        stats["buckets"][b] = counts.get(b, {"documents": 0, "tokens": 0})
    stats["seconds"] = round(time.time() - t0, 1)
    stats["settings"] = asdict(settings)
    (work / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("LLM stage done: %s", {b: v["documents"] for b, v in stats["buckets"].items()})
    return stats
