"""Throughput of ``datagen run`` against datatrove's own pipelines over the same documents, same run.

    python bench/datagen.py [--docs 3000] [--dedup-docs 3000] [--repeat 3] [--tokenizer PATH]
                            [--out bench/results/datagen.json] [--keep DIR] [--no-dedup]

Stage 1: documents are 2-4 KB of English text with safety labels 0-5. The baseline is datatrove's bare
JSONL -> tokenizer path (``JsonlReader -> DocumentTokenizer``, the same tokenizer.json, EOS appended,
no shuffle). The datagen path is a whole ``datagen run`` (stage 1 and the final stage): quarantining
JSONL reader -> quarantine -> fastText safety score -> route -> pending JSONL -> harmfulness tags ->
tokenize (EOS) -> MDS write, then merge index, manifest, stats. A second datagen variant adds fastText
language ID and exact dedup (per task).

Dedup: a second corpus of distinct synthetic documents, a fifth of them near-copies of others. The
project's MinHash stages (``build_dedup_stages``: signatures after its reader and quarantine, buckets,
clusters, then its reader -> quarantine -> near-dedup filter -> JSONL) against datatrove's own MinHash
pipeline with its default settings (``JsonlReader -> MinhashDedupSignature``, ``MinhashDedupBuckets``,
``MinhashDedupCluster``, ``JsonlReader -> MinhashDedupFilter -> JsonlWriter``). Both must keep the same
number of documents.

Every pipeline runs in this process (one worker; the bucket stage one task per band), the variants
interleaved ``--repeat`` times after a warm-up; each figure is the median over the repeats. "Per core"
figures divide by the CPU seconds the process used (all its threads), which stays meaningful on a
shared machine; wall-clock figures are given too.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shutil
import statistics
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


def make_dedup_corpus(path: Path, n: int, seed: int = 0, near_share: float = 0.2) -> tuple[int, int]:
    """``n`` documents of 300-600 words drawn from a Zipf-like vocabulary (distinct under MinHash), of which
    ``near_share`` are copies of an earlier document with 2% of the words replaced. Returns (bytes, copies)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    weights = [1.0 / (r + 1) for r in range(len(vocab))]
    originals: list[list[str]] = []
    size = copies = 0
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            if originals and rng.random() < near_share:
                words = list(rng.choice(originals))
                for j in rng.sample(range(len(words)), max(1, len(words) // 50)):
                    words[j] = rng.choice(vocab)
                copies += 1
            else:
                words = rng.choices(vocab, weights, k=rng.randint(300, 600))
                originals.append(words)
            text = " ".join(words) + "."
            size += len(text.encode())
            f.write(json.dumps({"id": f"d{i}", "text": text, "score": 0}) + "\n")
    return size, copies


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):
    c0, t0 = cpu_seconds(), time.perf_counter()
    extra = fn()
    return time.perf_counter() - t0, cpu_seconds() - c0, extra or {}


STAGE_CPU: dict[str, float] = {}


def time_executor_stages() -> None:
    """Record the CPU seconds of every datatrove executor run under its logging folder's name (``stage1``,
    ``final``, ...), so that a ``datagen run`` gives its stage-1 job's share beside its total."""
    from datatrove.executor import LocalPipelineExecutor

    original = LocalPipelineExecutor.run

    def run(self):
        c0 = cpu_seconds()
        try:
            return original(self)
        finally:
            name = Path(self.logging_dir.path).name
            STAGE_CPU[name] = STAGE_CPU.get(name, 0.0) + cpu_seconds() - c0

    LocalPipelineExecutor.run = run


def measure(variants: dict, repeat: int, docs: int, nbytes: int) -> dict:
    """Run every variant ``repeat`` times, interleaved; median wall and CPU seconds of each (and of the
    extra CPU figures a variant returns, e.g. its stage-1 job)."""
    runs: dict[str, list] = {name: [] for name in variants}
    for _ in range(repeat):
        for name, fn in variants.items():
            runs[name].append(timed(fn))
    out = {}
    for name, rs in runs.items():
        wall = statistics.median(r[0] for r in rs)
        cpu = statistics.median(r[1] for r in rs)
        out[name] = {
            "repeats": len(rs),
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_s_min": round(min(r[1] for r in rs), 3),
            "cpu_s_each": [round(r[1], 3) for r in rs],
            "docs_per_s_wall": round(docs / wall, 1),
            "docs_per_cpu_s": round(docs / cpu, 1),
            "mb_per_cpu_s": round(nbytes / cpu / 1e6, 2),
        }
        for key in rs[0][2]:
            values = [r[2][key] for r in rs]
            out[name][key] = round(statistics.median(values), 3)
            out[name][f"{key}_min"] = round(min(values), 3)
            out[name][f"{key}_each"] = [round(v, 3) for v in values]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=3000, help="documents of the stage-1 corpus")
    ap.add_argument(
        "--dedup-docs",
        type=int,
        default=500,
        help="documents of the dedup corpus (datatrove's English word tokenizer, spaCy, takes ~15 ms each)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of every variant (median reported)")
    ap.add_argument("--no-dedup", action="store_true", help="stage 1 only")
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="HF tokenizer folder (default: SmolLM2's if prepared, else a 8192-entry BPE trained here)",
    )
    ap.add_argument("--out", default=None, help="also write the JSON report to this file")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder, removed)")
    args = ap.parse_args()

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    from datagen.classifier import TrainClassifierConfig, train_classifier
    from datagen.config import DatagenConfig
    from datagen.pipeline import run
    from datagen.tokenizer_train import iter_jsonl_texts, train_bpe_tokenizer
    from infra.config import load_config
    from infra.log import setup_logging
    from infra.paths import smollm2_dir
    from infra.tokenizer import load_tokenizer

    setup_logging("WARNING")
    time_executor_stages()
    load_at_start = round(os.getloadavg()[0], 2)
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-datagen-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "input" / "docs.jsonl"
    data.parent.mkdir(exist_ok=True)
    nbytes = make_corpus(data, args.docs)
    tok = args.tokenizer or (str(smollm2_dir()) if (smollm2_dir() / "tokenizer.json").is_file() else None)
    if tok is None:
        tok = str(train_bpe_tokenizer(iter_jsonl_texts(data), work / "tokenizer", vocab_size=8192))
    eos = load_tokenizer(tok, add_tag=False).eos_token
    clf = work / "classifier"
    train_classifier(TrainClassifierConfig(labels=str(data), output=str(clf), backend="fasttext"))

    def executor(pipeline, out: Path, tasks: int = 1):
        return LocalPipelineExecutor(pipeline, tasks=tasks, workers=1, logging_dir=str(out / "logs"))

    def baseline():
        out = work / "baseline"
        shutil.rmtree(out, ignore_errors=True)
        tokenizer = DocumentTokenizer(
            str(out / "tokens"),
            tokenizer_name_or_path=str(Path(tok) / "tokenizer.json"),
            eos_token=eos,
            shuffle_documents=False,
        )
        executor([JsonlReader(str(data.parent)), tokenizer], out).run()

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
                "filters.dedup_scope=task",
                "filters.write_dropped=false",
                "executor.tasks=1",
                "executor.workers=1",
            ],
        )
        STAGE_CPU.clear()
        stats = run(cfg)
        assert stats["balance"]["ok"] and stats["read"] == args.docs
        return {"stage1_job_cpu_s": STAGE_CPU["stage1"]}

    # warm-up on the same input (imports, first tokenizer/classifier loads) so that no timed variant
    # pays one-time costs; the timed runs still include per-run fixed costs (tokenizer copy, model
    # loads, index merge, manifest), which a longer run amortises
    datagen("warmup", False)
    baseline()
    results = measure(
        {
            "baseline_datatrove_jsonl_tokenize": baseline,
            "datagen_score_route_tag_tokenize_mds": lambda: datagen("dg", False),
            "datagen_with_langid_dedup": lambda: datagen("dg_filters", True),
        },
        args.repeat,
        args.docs,
        nbytes,
    )
    base = results["baseline_datatrove_jsonl_tokenize"]
    for name, r in results.items():
        if name != "baseline_datatrove_jsonl_tokenize":
            # the stage-1 job against the baseline job (the target), and the whole run (tokenizer copy,
            # stage 1, final stage: index merge, stats, manifest) against it
            # (medians over the repeats; ``_min``: the least disturbed runs, as timeit reports)
            r["stage1_job_vs_baseline"] = round(r["stage1_job_cpu_s"] / base["cpu_s"], 3)
            r["stage1_job_vs_baseline_min"] = round(r["stage1_job_cpu_s_min"] / base["cpu_s_min"], 3)
            r["whole_run_vs_baseline"] = round(r["cpu_s"] / base["cpu_s"], 3)
            r["whole_run_vs_baseline_min"] = round(r["cpu_s_min"] / base["cpu_s_min"], 3)
    stats = json.loads((work / "dg" / "stats.json").read_text())
    report = {
        "benchmark": "datagen stage 1 and MinHash dedup against datatrove",
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "load_avg_1m_at_start": load_at_start,
        "stage1": {
            "documents": args.docs,
            "text_mb": round(nbytes / 1e6, 2),
            "mean_doc_bytes": round(nbytes / args.docs),
            # a name, not this machine's path: the prepared SmolLM2 folder or the BPE trained for the bench
            "tokenizer": tok
            if args.tokenizer
            else ("smollm2-135m-instruct" if "smollm2" in tok else "bench BPE (8192)"),
            "tokens": sum(b["tokens"] for b in stats["buckets"].values()),
            "target_cpu_time_vs_baseline": 1.2,
            "results": results,
        },
    }
    if not args.no_dedup:
        report["dedup"] = bench_dedup(work, args.dedup_docs, args.repeat, tok, executor)
    report["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bench_dedup(work: Path, n: int, repeat: int, tok: str, executor) -> dict:
    """The project's MinHash stages against datatrove's MinHash pipeline (defaults), same input."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from datagen.config import DatagenConfig
    from datagen.pipeline import _dedup_filters, _front_steps, build_dedup_stages
    from infra.config import load_config

    data = work / "dedup_input" / "docs.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    nbytes, copies = make_dedup_corpus(data, n)
    kept: dict[str, int] = {}

    def count_lines(folder: Path) -> int:
        return sum(len(f.read_text().splitlines()) for f in folder.glob("*.jsonl"))

    def datatrove_minhash():
        out = work / "dd_datatrove"
        shutil.rmtree(out, ignore_errors=True)
        buckets = MinhashDedupSignature(str(out / "sigs")).config.num_buckets  # the default config
        executor([JsonlReader(str(data.parent)), MinhashDedupSignature(str(out / "sigs"))], out / "sig").run()
        executor([MinhashDedupBuckets(str(out / "sigs"), str(out / "buckets"))], out / "buckets", buckets).run()
        executor([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"))], out / "cluster").run()
        executor(
            [
                JsonlReader(str(data.parent)),
                MinhashDedupFilter(str(out / "remove")),
                JsonlWriter(str(out / "kept"), compression=None),
            ],
            out / "filter",
        ).run()
        kept["datatrove"] = count_lines(out / "kept")

    def project_minhash():
        out = work / "dd_datagen"
        shutil.rmtree(out, ignore_errors=True)
        cfg = load_config(
            DatagenConfig,
            None,
            [
                f"output={out}",
                f"input.path={data.parent}",
                f"tokenizer.path={tok}",
                "filters.language.enabled=false",
                "filters.exact_dedup=false",
                "filters.near_dedup.enabled=true",
                "executor.tasks=1",
                "executor.workers=1",
            ],
        )
        for name, pipeline, tasks in build_dedup_stages(cfg, out):
            executor(pipeline, out / "logs" / name, tasks).run()
        # what stage 1 runs up to the near-dedup filter, written out as datatrove's filter stage writes
        front, _ = _front_steps(cfg, out, scratch=out / "dedup" / "scratch" / "filter")
        filt = _dedup_filters(cfg, out, dropped=False, names=["near_dedup"])
        executor([*front, *filt, JsonlWriter(str(out / "kept"), compression=None)], out / "logs" / "filter").run()
        kept["datagen"] = count_lines(out / "kept")

    datatrove_minhash()  # warm-up (word tokenizer, imports)
    project_minhash()
    results = measure(
        {"baseline_datatrove_minhash": datatrove_minhash, "datagen_minhash_stages": project_minhash},
        repeat,
        n,
        nbytes,
    )
    if kept["datatrove"] != kept["datagen"]:
        raise AssertionError(f"the two MinHash pipelines kept different numbers of documents: {kept}")
    ours, base = results["datagen_minhash_stages"], results["baseline_datatrove_minhash"]
    ours["cpu_vs_baseline"] = round(ours["cpu_s"] / base["cpu_s"], 3)
    ours["cpu_vs_baseline_min"] = round(ours["cpu_s_min"] / base["cpu_s_min"], 3)
    return {
        "documents": n,
        "near_copies_planted": copies,
        "kept": kept["datagen"],
        "removed": n - kept["datagen"],
        "text_mb": round(nbytes / 1e6, 2),
        "settings": "datatrove MinhashConfig defaults (5-grams, 14 buckets x 8 hashes), English word tokenizer",
        "results": results,
    }


if __name__ == "__main__":
    sys.exit(main())
