"""stats.json of a run (from datatrove's per-task stats) and the ``inspect`` table."""

from __future__ import annotations

import json
from pathlib import Path

from datagen.config import DatagenConfig


def _count(v) -> int:
    """A datatrove counter: a plain number, or a value statistic ``{"total": ...}``."""
    return int(v["total"] if isinstance(v, dict) else v)


def _task_stats(logging_dir: Path) -> list[list[dict]]:
    """Each task's step records (``stats/<rank>.json``, in rank order) of one stage."""
    return [json.loads(f.read_text()) for f in sorted((logging_dir / "stats").glob("*.json"))]


def _load_stage_stats(logging_dir: Path) -> tuple[list[dict[str, int]] | None, int]:
    """Per pipeline step, the counters of one stage summed over its tasks' ``stats/<rank>.json``."""
    tasks = _task_stats(logging_dir)
    total: list[dict[str, int]] | None = None
    for rank, steps in enumerate(tasks):
        if total is None:
            total = [{} for _ in steps]
        if len(steps) != len(total):
            raise ValueError(f"{logging_dir / 'stats'}: task {rank} has {len(steps)} steps, others {len(total)}")
        for acc, step in zip(total, steps):
            for k, v in step.get("stats", {}).items():
                acc[k] = acc.get(k, 0) + _count(v)
    return total, len(tasks)


def _stage_times(logs: Path) -> dict:
    """Per stage that ran (its ``stats/<rank>.json``): tasks, the seconds its steps took summed over the
    tasks, and the documents its reader read per such second."""
    out = {}
    for stage in sorted(p for p in logs.iterdir() if (p / "stats").is_dir()):
        tasks = _task_stats(stage)
        seconds = sum(float((s.get("time_stats") or {}).get("total", 0.0)) for steps in tasks for s in steps)
        docs = sum(_count(steps[0].get("stats", {}).get("documents", 0)) for steps in tasks if steps)
        out[stage.name] = {
            "tasks": len(tasks),
            "task_seconds": round(seconds, 3),
            "documents": docs,
            "documents_per_task_second": round(docs / seconds, 1) if seconds > 0 else None,
        }
    return out


def _dedup_stats(cfg: DatagenConfig, corpus: Path, dropped: dict) -> dict:
    """What each dedup removed: ``exact`` (scope, documents) and ``near`` (documents removed by the
    stage-1 filter, and ``to_remove``, what datatrove's cluster stage marked; the balance checks both
    agree)."""
    f = cfg.filters
    out: dict = {"exact": None, "near": None}
    if f.exact_dedup:
        out["exact"] = {"scope": f.dedup_scope, "removed": dropped.get("exact_dedup", {}).get("total", 0)}
    if f.near_dedup.enabled:
        cluster, _ = _load_stage_stats(corpus / "logs" / "dedup_near_cluster")
        c = cluster[0] if cluster else {}
        out["near"] = {
            "removed": dropped.get("near_dedup", {}).get("total", 0),
            "to_remove": c.get("to_remove", 0),
        }
    return out


def collect_stats(
    cfg: DatagenConfig, corpus: Path, labels: list[str], samples: dict[str, int], llm_stats: dict | None = None
) -> dict:
    """Build stats.json: documents/tokens per bucket, drops per filter and reason, quarantine per reason,
    score histogram, routes, tags (inserted, realised rate) and the balance check."""
    total, n_tasks = _load_stage_stats(corpus / "logs" / "stage1")
    if total is None:
        raise FileNotFoundError(f"{corpus / 'logs' / 'stage1' / 'stats'}: no task stats (did stage 1 run?)")
    if len(total) != len(labels):
        raise ValueError(f"stage-1 stats have {len(total)} steps, the pipeline {len(labels)}")
    by = dict(zip(labels, total))
    read = by["read"].get("documents", 0)
    quarantined = {"total": 0, "reasons": {}}
    for lab, q in by.items():
        if lab.startswith("quarantine"):
            quarantined["total"] += q.get("quarantined", 0)
            for k, v in sorted(q.items()):
                if k.startswith("quarantined_"):
                    r = k[len("quarantined_") :]
                    quarantined["reasons"][r] = quarantined["reasons"].get(r, 0) + v
    dropped = {}
    for lab, c in by.items():
        if lab == "filter:html_extraction":
            # datatrove's extractors count their losses under their own names
            reasons = {
                "timeout": c.get("timeout", 0),
                "error": c.get("clean_error", 0) + c.get("broken_process", 0),
                "empty_extraction": c.get("dropped", 0),
            }
            dropped["html_extraction"] = {
                "total": c.get("total", 0) - c.get("forwarded", 0),
                "reasons": {k: v for k, v in reasons.items() if v},
            }
        elif lab.startswith("filter:"):
            dropped[lab[len("filter:") :]] = {
                "total": c.get("dropped", 0),
                "reasons": {k[len("dropped_") :]: v for k, v in sorted(c.items()) if k.startswith("dropped_")},
            }
    dropped_total = sum(d["total"] for d in dropped.values())
    route = by["route"]
    kept = route.get("kept", 0)
    score = by["score"]
    hist = {str(s): score.get(f"score_{s}", 0) for s in range(6)}
    tok = by["tokenize"]
    buckets = {}
    for b, n in samples.items():
        buckets[b] = {"documents": n, "tokens": tok.get(f"{b}_tokens", 0)}
    if llm_stats:
        for b, v in (llm_stats.get("buckets") or {}).items():
            if b in buckets:
                buckets[b]["tokens"] = int(v.get("tokens", buckets[b]["tokens"]))
    tag = by.get("tag", {})
    words = tag.get("tag_words", 0)
    tags = {
        "enabled": cfg.tag.enabled,
        "p": cfg.tag.p,
        "min_score": cfg.tag.min_score,
        "documents": tag.get("tagged_documents", 0),
        "inserted": tag.get("tags", 0),
        "words": words,
        "realised_rate": (tag.get("tags", 0) / words) if words else None,
        "literal_tags_neutralised": tag.get("literal_tags", 0),
    }
    routes = {r: route.get(f"route_{r}", 0) for r in ("raw", "rephrase", "refusal")}
    pending = {r: by["pending"].get(f"pending_{r}", 0) for r in ("rephrase", "refusal")}
    decided = {w: score.get(f"decided_by_{w}", 0) for w in ("classifier", "label", "agree")}
    checks = {
        "kept == documents scored": kept == sum(decided.values()),
        "read == kept + dropped + quarantined": read == kept + dropped_total + quarantined["total"],
        "kept == raw + rephrase + refusal routes": kept == sum(routes.values()),
        "raw bucket == raw route": buckets.get("raw", {}).get("documents", 0) == routes["raw"],
        "tagged bucket == tagged documents": buckets.get("tagged", {}).get("documents", 0) == tags["documents"],
    }
    pii = by.get("pii", {})
    dedup = _dedup_stats(cfg, corpus, dropped)
    if dedup["near"] is not None:
        checks["near-dedup removed == marked by its cluster stage"] = (
            dedup["near"]["removed"] == dedup["near"]["to_remove"]
        )
    return {
        "tasks": n_tasks,
        "read": read,
        "kept": kept,
        "dropped": {"total": dropped_total, "by_filter": dropped},
        "quarantined": quarantined,
        # input records that are not documents (WARC requests, non-HTML responses), not part of `read`
        "read_skipped": {k[len("skipped_") :]: v for k, v in sorted(by["read"].items()) if k.startswith("skipped_")},
        # characters the reader repaired in documents it kept (NULs removed, lone surrogates replaced)
        "repaired": {k[len("repaired_") :]: v for k, v in sorted(by["read"].items()) if k.startswith("repaired_")},
        "dedup": dedup,
        # e-mail and IP addresses replaced by datatrove's PIIFormatter (pii.enabled)
        "pii": {
            "enabled": cfg.pii.enabled,
            "documents": pii.get("redacted_documents", 0),
            "emails": pii.get("redacted_emails", 0),
            "ips": pii.get("redacted_ips", 0),
        },
        # datatrove's step timings per stage: a throughput summary that holds for local and Slurm runs
        "throughput": _stage_times(corpus / "logs"),
        "score_histogram": hist,
        "scores_with_label": score.get("with_label", 0),
        "score": {
            "classifier": _prepared(corpus).get("classifier"),
            "combine": cfg.score.combine,
            "label_field": cfg.score.label_field if cfg.score.combine != "classifier" else None,
            "decided_by": decided,
        },
        "routes": routes,
        "pending": pending,
        "tags": tags,
        "buckets": buckets,
        "llm": llm_stats,
        "balance": {
            "read": read,
            "kept": kept,
            "dropped": dropped_total,
            "quarantined": quarantined["total"],
            "checks": checks,
            "ok": all(checks.values()),
        },
    }


def _prepared(corpus) -> dict:
    path = Path(corpus) / "logs" / "prepared.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def format_summary(stats: dict) -> str:
    """A plain-text table of a stats.json."""
    lines = []

    def row(k, v, indent=0):
        lines.append(f"{' ' * indent}{k:<{40 - indent}} {v}")

    b = stats["balance"]
    row("documents read", stats["read"])
    row("kept", stats["kept"])
    row("dropped", stats["dropped"]["total"])
    for name, d in stats["dropped"]["by_filter"].items():
        row(name, d["total"], 2)
        for r, n in d["reasons"].items():
            row(r, n, 4)
    row("quarantined", stats["quarantined"]["total"])
    for r, n in stats["quarantined"]["reasons"].items():
        row(r, n, 2)
    row("balance (read = kept + dropped + quarantined)", "OK" if b["ok"] else f"FAILED {b['checks']}")
    if stats.get("read_skipped"):
        row("input records that are no documents", sum(stats["read_skipped"].values()))
        for r, n in stats["read_skipped"].items():
            row(r, n, 2)
    if stats.get("repaired"):
        row("characters repaired", "  ".join(f"{k}:{v}" for k, v in stats["repaired"].items()))
    for kind, d in (stats.get("dedup") or {}).items():
        if d:
            row(f"{kind} dedup removed", f"{d['removed']}" + (f" (scope {d['scope']})" if "scope" in d else ""))
    pii = stats.get("pii") or {}
    if pii.get("enabled"):
        row("PII redacted", f"{pii['emails']} e-mail and {pii['ips']} IP addresses in {pii['documents']} documents")
    llm_q = {b: sum(r.values()) for b, r in ((stats.get("llm") or {}).get("quarantined") or {}).items()}
    if llm_q:
        row("LLM outputs quarantined", f"{sum(llm_q.values())}  " + "  ".join(f"{k}:{v}" for k, v in llm_q.items()))
    lines.append("")
    row("score histogram", "  ".join(f"{k}:{v}" for k, v in stats["score_histogram"].items()))
    sc = stats.get("score")
    if sc:
        by = "  ".join(f"{k}:{v}" for k, v in sc["decided_by"].items())
        row("score decided by", f"{by}  (combine={sc['combine']}, classifier {sc['classifier']})")
    row("routes", "  ".join(f"{k}:{v}" for k, v in stats["routes"].items()))
    row("pending for LLM stage", "  ".join(f"{k}:{v}" for k, v in stats["pending"].items()))
    t = stats["tags"]
    rate = f"{t['realised_rate']:.4f}" if t["realised_rate"] is not None else "-"
    row("tags inserted", f"{t['inserted']} in {t['documents']} documents, {t['words']} words, rate {rate} (p={t['p']})")
    for stage, th in (stats.get("throughput") or {}).items():
        rate = th["documents_per_task_second"]
        row(
            f"throughput {stage}",
            f"{th['documents']} documents in {th['task_seconds']:.1f} task-seconds over {th['tasks']} tasks"
            + (f" ({rate:,.0f} documents per task-second)" if rate else ""),
        )
    lines.append("")
    lines.append(f"{'bucket':<20} {'documents':>12} {'tokens':>14}")
    for name, v in stats["buckets"].items():
        lines.append(f"{name:<20} {v['documents']:>12} {v['tokens']:>14}")
    return "\n".join(lines)


def curriculum_epochs(buckets: dict, curriculum, tokens: int) -> dict:
    """Passes over each bucket a run of ``tokens`` tokens with ``curriculum`` makes (from the buckets'
    token counts; the trainer's packing changes this by at most a sample per document):
    ``{bucket: {"share", "tokens", "bucket_tokens", "epochs"}}``."""
    phases = curriculum.phases
    share: dict[str, float] = {}
    for i, p in enumerate(phases):
        span = (phases[i + 1].start if i + 1 < len(phases) else 1.0) - p.start
        total = sum(p.weights.values())
        for b, w in p.weights.items():
            share[b] = share.get(b, 0.0) + span * w / total
    out = {}
    for b, sh in share.items():
        have = buckets.get(b, {}).get("tokens", 0)
        want = sh * tokens
        out[b] = {"share": sh, "tokens": round(want), "bucket_tokens": have, "epochs": (want / have) if have else None}
    return out


def inspect(corpus: str | Path, curriculum=None, tokens: int | None = None) -> str:
    """The stats table; with a curriculum and a token budget also the epochs each bucket would be read
    for, with a warning for every bucket read more than once (or more than the curriculum allows)."""
    path = Path(corpus) / "stats.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (is {corpus} a corpus folder written by `datagen run`?)")
    stats = json.loads(path.read_text())
    text = format_summary(stats)
    if curriculum is None or not tokens:
        return text
    lines = [
        "",
        f"{'curriculum over ' + format(tokens, ',') + ' tokens':<32} {'share':>7} {'tokens':>14} {'epochs':>8}",
    ]
    for b, e in curriculum_epochs(stats["buckets"], curriculum, tokens).items():
        ep = "empty" if e["epochs"] is None else f"{e['epochs']:.2f}"
        lines.append(f"{b:<32} {e['share']:>7.1%} {e['tokens']:>14,} {ep:>8}")
        limit = curriculum.bucket_max_epochs.get(b, curriculum.max_epochs)
        if e["epochs"] is None and e["share"] > 0:
            lines.append(
                f"  WARNING: the curriculum gives '{b}' {e['share']:.1%} of the tokens but the bucket is empty"
            )
        elif e["epochs"] is not None and e["epochs"] > (limit if limit is not None else 1.0):
            allowed = f"the curriculum allows {limit:g}" if limit is not None else "no max_epochs is set"
            lines.append(
                f"  WARNING: '{b}' holds {e['bucket_tokens']:,} tokens ({stats['buckets'][b]['documents']} documents) "
                f"and would be read {e['epochs']:.1f} times ({allowed})"
            )
    return text + "\n" + "\n".join(lines)
