"""``python -m datagen annotate``: LLM rubric labels (0-5 with a reason) for ``train-classifier``.

Output: a labels JSONL (``id``, ``text``, ``score``, ``reason``, ``source``), plus
``<output>.quarantine.jsonl`` for input lines that cannot be read and answers that stayed invalid after
``llm.attempts`` tries (raw answer and reason kept), and ``<work_dir>/stats.json``.
Re-running the same command resumes: finished documents are not sent again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from datagen.llm.config import AnnotateConfig
from datagen.llm.rollouts import annotate_rollout
from datagen.llm.runner import run_transformation
from datagen.llm.stage import endpoint_for, settings_from
from infra.log import get_logger

log = get_logger(__name__)


def _input_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz")))
        if files:
            return files
        raise FileNotFoundError(f"annotate: no .jsonl files in {path}")
    raise FileNotFoundError(f"annotate: input {path} does not exist")


def read_documents(cfg: AnnotateConfig, raw_cut: int = 500) -> tuple[list, list[dict]]:
    """Read input records into datatrove Documents; unusable lines come back as quarantine records."""
    import gzip

    from datatrove.data import Document

    docs, bad, seen = [], [], set()
    for f in _input_files(Path(cfg.input)):
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = {"source": str(f), "line": lineno, "raw": line[:raw_cut]}
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    bad.append({**where, "reason": f"invalid_json: {e.msg}"})
                    continue
                text = rec.get(cfg.text_field) if isinstance(rec, dict) else None
                if not isinstance(text, str) or not text.strip():
                    bad.append({**where, "reason": f"no_text: field '{cfg.text_field}' missing or empty"})
                    continue
                doc_id = str(rec.get(cfg.id_field) or f"{f.stem}:{lineno}")
                if doc_id in seen:
                    bad.append({**where, "reason": f"duplicate_id: {doc_id}"})
                    continue
                seen.add(doc_id)
                meta = {"source": str(f), "line": lineno}
                strata = {k: rec[k] for k in cfg.sample.stratify_by if isinstance(rec.get(k), str | int)}
                if strata:
                    meta["strata"] = strata
                docs.append(Document(text=text, id=doc_id, metadata=meta))
                if 0 <= cfg.limit <= len(docs):
                    return docs, bad
    return docs, bad


def stratum_of(cfg: AnnotateConfig):
    """``doc -> stratum`` (a tuple of the ``sample.stratify_by`` values; see ``SampleConfig``)."""
    lid = None

    def language(doc) -> str:
        nonlocal lid
        if lid is None:
            import fasttext

            from datagen.steps.filters import default_lid_model

            lid = fasttext.load_model(default_lid_model())
        labels, _ = lid.predict(" ".join(doc.text.split())[:2000], k=1)
        return labels[0].replace("__label__", "") if labels else "unknown"

    def key(doc) -> tuple:
        given = doc.metadata.get("strata") or {}
        out = []
        for k in cfg.sample.stratify_by:
            if k in given:
                out.append(str(given[k]))
            elif k == "source":
                out.append(Path(doc.metadata["source"]).name)
            elif k == "lang":
                out.append(language(doc))
            else:
                out.append("unknown")
        return tuple(out)

    return key


def run_annotate(cfg: AnnotateConfig) -> dict:
    """Label ``cfg.input`` with the rubric; write labels and quarantine; return stats."""
    from datagen.llm.sampling import stratified_sample

    t0 = time.time()
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.work_dir) if cfg.work_dir else out.with_name(out.name + ".work")
    docs, bad = read_documents(cfg)
    read = len(docs)
    strata = None
    if cfg.sample.documents >= 0:
        sc = cfg.sample
        docs, strata = stratified_sample(docs, stratum_of(cfg), sc.documents, sc.min_per_stratum, sc.seed)
        log.info("labelling a stratified sample of %d of %d documents (%d strata)", len(docs), read, len(strata))
    settings = settings_from(cfg.llm)
    with endpoint_for(cfg.llm, work) as ep:
        results = run_transformation(
            "annotate",
            docs,
            len(docs),
            annotate_rollout,
            ep,
            work,
            shared_context={"settings": settings},
            records_per_chunk=cfg.llm.records_per_chunk,
        )
    texts = {d.id: d for d in docs}
    stats = {
        "read": read,
        "sample": {"stratify_by": list(cfg.sample.stratify_by), "strata": strata} if strata is not None else None,
        "documents": len(docs),
        "labelled": 0,
        "quarantined": {},
        "unreadable_lines": len(bad),
        "scores": {str(i): 0 for i in range(6)},
        "requests": 0,
        "first_try": 0,
    }
    quarantine = [dict(b, reason=b["reason"].split(":")[0], detail=b["reason"]) for b in bad]
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:  # input order, so that labels line up with the input file
            rec = results[d.id]
            res = (rec.get("metadata") or {}).get("llm") or [{}]
            res = res[0]
            stats["requests"] += len(res.get("exchanges", []))
            o = (res.get("outputs") or [{"status": "quarantined", "reason": "no_result", "raw": ""}])[0]
            if o["status"] == "ok":
                f.write(
                    json.dumps(
                        {
                            "id": d.id,
                            "text": texts[d.id].text,
                            "score": o["score"],
                            "reason": o["reason"],
                            "source": d.metadata.get("source"),
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
                stats["labelled"] += 1
                stats["scores"][str(o["score"])] += 1
                stats["first_try"] += int(o.get("attempt", 0) == 0)
            else:
                stats["quarantined"][o["reason"]] = stats["quarantined"].get(o["reason"], 0) + 1
                quarantine.append(
                    {
                        "source": d.metadata.get("source"),
                        "line": d.metadata.get("line"),
                        "id": d.id,
                        "reason": o["reason"],
                        "problems": o.get("problems", []),
                        "raw": o.get("raw", ""),
                    }
                )
    tmp.replace(out)
    with open(out.with_name(out.name + ".quarantine.jsonl"), "w", encoding="utf-8") as f:
        for q in quarantine:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    stats["seconds"] = round(time.time() - t0, 1)
    work.mkdir(parents=True, exist_ok=True)
    (work / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info(
        "annotate: %d labelled, %d quarantined, %d unreadable lines -> %s",
        stats["labelled"],
        sum(stats["quarantined"].values()),
        len(bad),
        out,
    )
    return stats
