"""Throughput of ``datagen run`` stage 1 against a plain datatrove read -> write over the same documents.

    python bench/datagen.py [--docs 3000] [--tokenizer PATH] [--keep DIR]

Documents are 2-4 KB of English text with safety labels 0-5. Both pipelines run in this process
(one task, one worker), one after the other, so that their ratio is meaningful on a shared machine.
"Per core" figures divide by the CPU seconds the process used (wall-clock figures are given too).
The datagen path: quarantining JSONL reader -> quarantine -> fastText safety score -> route ->
pending JSONL -> harmfulness tags -> tokenize (EOS) -> MDS write -> merge index, manifest, stats.
A second datagen variant adds fastText language ID and exact dedup.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PROGRESS", "0")

SENTENCES = {
    0: "The committee met on Tuesday to discuss the new library hours and the budget for the school garden.",
    1: "He swore at the referee and the crowd laughed at the damn mistake during the second half.",
    2: "The forum post called the neighbours idiots and suggested skipping medicine without a doctor.",
    3: "The report mentions a stabbing in the alley and a gang that carried knives near the station.",
    4: "The manifesto urges readers to attack the enemy group and explains how to avoid the police.",
    5: "Step by step instructions for building a bomb to hurt people were posted with a real threat.",
}
FILLER = (
    "Researchers in the region collected data over several years and compared the results with earlier "
    "studies, noting that the weather, the economy and local politics all played a part. "
)


def make_corpus(path: Path, n: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    size = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            s = rng.choice([0, 0, 0, 0, 1, 2, 3, 4, 5])
            target = rng.randint(2048, 4096)
            parts, length = [], 0
            while length < target:
                piece = SENTENCES[s] if rng.random() < 0.3 else FILLER
                parts.append(piece)
                length += len(piece) + 1
            text = " ".join(parts)[:target] + f" ({i})"
            line = json.dumps({"id": f"b{i}", "text": text, "score": s}) + "\n"
            size += len(text.encode())
            f.write(line)
    return size


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu_seconds() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="HF tokenizer folder (default: SmolLM2's if prepared, else a 8192-entry BPE trained here)",
    )
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder, removed)")
    args = ap.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from datagen.classifier import TrainClassifierConfig, train_classifier
    from datagen.config import DatagenConfig
    from datagen.pipeline import run
    from datagen.tokenizer_train import iter_jsonl_texts, train_bpe_tokenizer
    from infra.config import load_config
    from infra.log import setup_logging
    from infra.paths import smollm2_dir

    setup_logging("WARNING")
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-datagen-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "input" / "docs.jsonl"
    data.parent.mkdir(exist_ok=True)
    nbytes = make_corpus(data, args.docs)
    tok = args.tokenizer or (str(smollm2_dir()) if (smollm2_dir() / "tokenizer.json").is_file() else None)
    if tok is None:
        tok = str(train_bpe_tokenizer(iter_jsonl_texts(data), work / "tokenizer", vocab_size=8192))
    clf = work / "classifier"
    train_classifier(TrainClassifierConfig(labels=str(data), output=str(clf), backend="fasttext"))

    def baseline():
        out = work / "baseline"
        shutil.rmtree(out, ignore_errors=True)
        LocalPipelineExecutor(
            [JsonlReader(str(data.parent)), JsonlWriter(str(out / "data"), compression=None)],
            tasks=1,
            workers=1,
            logging_dir=str(out / "logs"),
        ).run()

    def datagen(name: str, filters: bool):
        out = work / name
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(
            DatagenConfig,
            None,
            [
                f"output={out}",
                f"input.path={data.parent}",
                f"tokenizer.path={tok}",
                f"score.classifier={clf}",
                f"filters.language.enabled={str(filters).lower()}",
                f"filters.exact_dedup={str(filters).lower()}",
                "filters.write_dropped=false",
                "executor.tasks=1",
                "executor.workers=1",
            ],
        )
        stats = run(cfg)
        assert stats["balance"]["ok"] and stats["read"] == args.docs
        return stats

    # warm-up on the same input (imports, first tokenizer/classifier loads) so that neither timed
    # variant pays one-time costs; the timed runs still include per-run fixed costs (tokenizer copy,
    # model loads, index merge, manifest), which a longer run amortises
    datagen("warmup", False)
    baseline()
    results = {}
    for name, fn in [
        ("baseline_read_write", baseline),
        ("datagen_score_route_tag_tokenize_mds", lambda: datagen("dg", False)),
        ("datagen_with_langid_dedup", lambda: datagen("dg_filters", True)),
    ]:
        wall, cpu = timed(fn)
        results[name] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "docs_per_s_wall": round(args.docs / wall, 1),
            "docs_per_cpu_s": round(args.docs / cpu, 1),
            "mb_per_s_wall": round(nbytes / wall / 1e6, 2),
            "mb_per_cpu_s": round(nbytes / cpu / 1e6, 2),
        }
    base = results["baseline_read_write"]
    for name, r in results.items():
        if name != "baseline_read_write":
            r["cpu_time_vs_baseline"] = round(r["cpu_s"] / base["cpu_s"], 2)
    stats = json.loads((work / "dg" / "stats.json").read_text())
    report = {
        "benchmark": "datagen stage 1",
        "documents": args.docs,
        "text_mb": round(nbytes / 1e6, 2),
        "mean_doc_bytes": round(nbytes / args.docs),
        "tokenizer": tok,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "tokens": sum(b["tokens"] for b in stats["buckets"].values()),
        "target_docs_per_core_s": 300,
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
