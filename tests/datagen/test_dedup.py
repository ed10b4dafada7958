"""Corpus-wide exact dedup and MinHash near-dedup as datatrove stages: the kept set does not depend on the
number of tasks, planted duplicates and near-duplicates are removed, and the stats account for both."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from datagen.config import DatagenConfig
from datagen.pipeline import run
from infra.config import load_config
from infra.corpus import open_bucket
from tests.datagen.conftest import LEVEL_SENTENCES, write_jsonl


def _docs(n: int, rng: random.Random) -> list[dict]:
    """``n`` documents of 80 words drawn at random from the test sentences' vocabulary: no two share a
    5-word shingle by more than chance."""
    vocab = sorted({w.strip(".,;:!?").lower() for lines in LEVEL_SENTENCES.values() for s in lines for w in s.split()})
    return [
        {"id": f"doc-{i:04d}", "text": " ".join(rng.choice(vocab) for _ in range(80)) + ".", "score": i % 6}
        for i in range(n)
    ]


def _near(text: str, rng: random.Random) -> str:
    """The same document with another ending, as pages of one site differ by a footer: a near-duplicate
    (5-gram Jaccard about 0.95)."""
    return text + " " + rng.choice(["Read more.", "Share this page.", "All rights reserved.", "Back to top."])


@pytest.fixture(scope="module")
def dup_input(tmp_path_factory) -> dict:
    """Four files: 120 distinct documents, 20 exact copies (some with other whitespace) and 15 planted
    near-duplicates, the copies in other files than their originals."""
    rng = random.Random(11)
    d = tmp_path_factory.mktemp("dups")
    docs = _docs(120, rng)
    files: list[list[dict]] = [[], [], [], []]
    for i, doc in enumerate(docs):
        files[i % 4].append(doc)
    exact = []
    for j, i in enumerate(rng.sample(range(120), 20)):
        text = docs[i]["text"] if j % 2 else docs[i]["text"].replace(" ", "  ", 3)
        copy = {"id": f"exact-{j}", "text": text, "score": docs[i]["score"]}
        files[(i + 1 + j % 3) % 4].append(copy)  # never the original's file
        exact.append((docs[i]["id"], copy["id"]))
    near = []
    others = [i for i in range(120) if all(docs[i]["id"] != a for a, _ in exact)]
    for j, i in enumerate(rng.sample(others, 15)):
        copy = {"id": f"near-{j}", "text": _near(docs[i]["text"], rng), "score": docs[i]["score"]}
        files[(i + 2) % 4].append(copy)
        near.append((docs[i]["id"], copy["id"]))
    for k, records in enumerate(files):
        rng.shuffle(records)
        write_jsonl(d / f"part-{k}.jsonl", records)
    return {"dir": d, "docs": docs, "exact": exact, "near": near, "read": 120 + 20 + 15}


def _run(tmp: Path, inp: dict, tokenizer_dir, tasks: int, *extra: str) -> tuple[dict, Path]:
    cfg = load_config(
        DatagenConfig,
        None,
        [
            f"output={tmp / f'corpus-{tasks}'}",
            f"input.path={inp['dir']}",
            f"tokenizer.path={tokenizer_dir}",
            "score.classifier=null",
            "score.combine=label",
            "tag.enabled=false",
            "filters.language.enabled=false",
            f"executor.tasks={tasks}",
            "executor.workers=2",
            "filters.near_dedup.enabled=true",
            *extra,
        ],
    )
    return run(cfg), Path(cfg.output)


def _kept_ids(corpus: Path) -> set[str]:
    ids = set()
    for bucket in ("raw",):  # tags are off: stage 1 writes raw, the rest is pending for the LLM stage
        ds = open_bucket(corpus, bucket)
        ids |= {ds[i]["id"] for i in range(len(ds))}
    for f in (corpus / "pending").rglob("*.jsonl"):
        ids |= {json.loads(line)["id"] for line in f.read_text().splitlines() if line.strip()}
    return ids


@pytest.fixture(scope="module")
def runs(dup_input, tokenizer_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dedup_runs")
    return {tasks: _run(tmp, dup_input, tokenizer_dir, tasks) for tasks in (1, 2, 4)}


def test_same_documents_survive_with_1_2_and_4_tasks(runs, dup_input):
    kept = {tasks: _kept_ids(corpus) for tasks, (_, corpus) in runs.items()}
    originals = {d["id"] for d in dup_input["docs"]}
    copies = {c for _, c in dup_input["exact"]}
    for tasks, ids in kept.items():
        stats = runs[tasks][0]
        assert stats["balance"]["ok"], stats["balance"]
        assert not ids & copies or all((o in ids) != (c in ids) for o, c in dup_input["exact"])
        # of every exact pair one text survives; of every planted near pair exactly one document
        for o, c in dup_input["exact"]:
            assert (o in ids) + (c in ids) == 1, (tasks, o, c)
        for o, c in dup_input["near"]:
            assert (o in ids) + (c in ids) == 1, (tasks, o, c)
        assert stats["kept"] == 120 == len(ids)
    # the documents that are nobody's duplicate are the same whatever the task count
    planted = {x for pair in dup_input["exact"] + dup_input["near"] for x in pair}
    assert kept[1] - planted == kept[2] - planted == kept[4] - planted == originals - planted


def test_stats_count_each_dedup(runs):
    for tasks, (stats, corpus) in runs.items():
        by = stats["dropped"]["by_filter"]
        assert by["exact_dedup"] == {"total": 20, "reasons": {"duplicate": 20}}, tasks
        assert by["near_dedup"] == {"total": 15, "reasons": {"near_duplicate": 15}}, tasks
        assert stats["dedup"]["exact"] == {"scope": "corpus", "removed": 20}
        assert stats["dedup"]["near"] == {"removed": 15, "to_remove": 15}
        assert stats["read"] == 155 and stats["kept"] + stats["dropped"]["total"] == 155
        dropped = [json.loads(line) for f in (corpus / "dropped" / "near_dedup").glob("*.jsonl") for line in f.open()]
        assert len(dropped) == 15


def test_per_task_dedup_misses_duplicates_across_tasks(dup_input, tokenizer_dir, tmp_path):
    # the one-pass option, for comparison: duplicates that another task reads survive
    stats, _ = _run(
        tmp_path, dup_input, tokenizer_dir, 4, "filters.dedup_scope=task", "filters.near_dedup.enabled=false"
    )
    assert stats["balance"]["ok"]
    assert stats["dropped"]["by_filter"]["exact_dedup"]["total"] == 0  # every copy is in another file
    assert stats["dedup"]["exact"] == {"scope": "task", "removed": 0}
