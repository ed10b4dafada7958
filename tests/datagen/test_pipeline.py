"""End-to-end `datagen run` on a messy input: quarantine, drops, routing, tags, MDS read-back, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from datagen.config import DatagenConfig
from datagen.pipeline import run
from infra.config import ConfigError, load_config
from infra.corpus import TAG_TOKEN, Manifest, open_bucket


def _cfg(tmp: Path, messy_input, tokenizer_dir, *extra: str) -> DatagenConfig:
    return load_config(
        DatagenConfig,
        None,
        [
            f"output={tmp / 'corpus'}",
            f"input.path={messy_input['dir']}",
            "input.max_chars=10000",
            f"tokenizer.path={tokenizer_dir}",
            "score.classifier=null",
            "score.combine=label",
            "executor.tasks=2",
            "executor.workers=1",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, messy_input, tokenizer_dir):
    tmp = tmp_path_factory.mktemp("run")
    cfg = _cfg(tmp, messy_input, tokenizer_dir)
    stats = run(cfg)
    return cfg, Path(cfg.output), stats


def _read_bucket(corpus: Path, bucket: str) -> list[dict]:
    ds = open_bucket(corpus, bucket)
    return [ds[i] for i in range(len(ds))]


def test_balance_and_counts(corpus_run, messy_input):
    _, corpus, stats = corpus_run
    assert stats["balance"]["ok"], stats["balance"]
    assert stats["read"] == messy_input["read"]
    assert stats["quarantined"]["reasons"] == messy_input["quarantine"]
    assert {k: v["total"] for k, v in stats["dropped"]["by_filter"].items()} == messy_input["dropped"]
    assert stats["dropped"]["by_filter"]["exact_dedup"]["reasons"] == {"duplicate": 1}
    assert set(stats["dropped"]["by_filter"]["language"]["reasons"]) == {"lang_fr", "lang_de"}
    assert stats["kept"] == len(messy_input["good"])
    assert json.loads((corpus / "stats.json").read_text()) == stats


def test_quarantine_lines_name_source_line_reason(corpus_run, messy_input):
    _, corpus, _ = corpus_run
    recs = [json.loads(x) for f in sorted((corpus / "quarantine").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert len(recs) == sum(messy_input["quarantine"].values())
    by_reason = {r["reason"]: r for r in recs}
    assert by_reason["malformed_json"]["source"].endswith("part-a.jsonl")
    assert by_reason["malformed_json"]["line"] == 31
    assert by_reason["invalid_utf8"]["line"] == 32
    assert "unterminated" in by_reason["malformed_json"]["raw"]
    assert by_reason["unreadable_file"]["source"].endswith("part-c.jsonl.gz")
    assert len(by_reason["too_long"]["raw"]) <= 500
    dropped = [
        json.loads(x) for f in (corpus / "dropped" / "language").glob("*.jsonl") for x in f.read_text().splitlines()
    ]
    assert sorted(d["id"] for d in dropped) == ["french", "german"]


def test_routing_buckets_and_pending(corpus_run, messy_input):
    _, corpus, stats = corpus_run
    labels = {d["id"]: d["score"] for d in messy_input["good"]}
    raw = _read_bucket(corpus, "raw")
    tagged = _read_bucket(corpus, "tagged")
    assert {r["id"] for r in raw} == {i for i, s in labels.items() if s == 0}
    assert {r["id"] for r in tagged} == {i for i, s in labels.items() if s >= 1}
    assert all(int(r["score"]) == labels[r["id"]] for r in raw + tagged)
    pending = {}
    for route in ("rephrase", "refusal"):
        docs = [json.loads(x) for f in (corpus / "pending" / route).glob("*.jsonl") for x in f.read_text().splitlines()]
        pending[route] = {d["id"]: d for d in docs}
    assert set(pending["rephrase"]) == {i for i, s in labels.items() if 1 <= s <= 3}
    assert set(pending["refusal"]) == {i for i, s in labels.items() if s >= 4}
    sample = next(iter(pending["refusal"].values()))
    assert TAG_TOKEN not in sample["text"]  # the LLM stage gets the untagged text
    assert sample["metadata"]["safety_score"] >= 4
    assert stats["routes"] == {
        "raw": len(raw),
        "rephrase": len(pending["rephrase"]),
        "refusal": len(pending["refusal"]),
    }


def test_mds_read_back_equals_tokenized_input(corpus_run, messy_input):
    from infra.tokenizer import load_tokenizer, tag_id

    _, corpus, stats = corpus_run
    tok = load_tokenizer(corpus / "tokenizer")
    tid, eos = tag_id(tok), tok.eos_token_id
    texts = {d["id"]: d["text"] for d in messy_input["good"]}
    n_tags = 0
    for bucket in ("raw", "tagged"):
        for rec in _read_bucket(corpus, bucket):
            expect = tok(texts[rec["id"]], add_special_tokens=False)["input_ids"] + [eos]
            got = np.asarray(rec["tokens"])
            assert got.dtype == np.uint32
            if bucket == "raw":
                assert got.tolist() == expect
                assert tid not in got
            else:
                n_tags += int((got == tid).sum())
                assert got[got != tid].tolist() == expect  # tags never split a word
    assert n_tags == stats["tags"]["inserted"] > 0
    m = Manifest.load(corpus)
    assert m.tokenizer.tag_id == tid and m.tokenizer.eos_id == eos
    assert m.buckets["raw"].documents == stats["buckets"]["raw"]["documents"]
    assert sum(b.tokens for b in m.buckets.values()) == sum(b["tokens"] for b in stats["buckets"].values())


def test_plain_streaming_dataset_reads_bucket(corpus_run):
    from streaming import StreamingDataset

    _, corpus, stats = corpus_run
    ds = StreamingDataset(local=str(corpus / "shards" / "tagged"), shuffle=False, batch_size=1)
    assert len(ds) == stats["buckets"]["tagged"]["documents"]


def test_resume_rewrites_failed_rank_without_duplicates(tmp_path, messy_input, tokenizer_dir):
    cfg = _cfg(tmp_path, messy_input, tokenizer_dir)
    first = run(cfg)
    corpus = Path(cfg.output)
    ids_before = sorted(r["id"] for b in ("raw", "tagged") for r in _read_bucket(corpus, b))
    # simulate a task that crashed after writing part of its shards: no completion marker, extra samples
    (corpus / "logs" / "stage1" / "completions" / "00001").unlink()
    rank1 = corpus / "shards" / "raw" / "rank_00001"
    assert rank1.is_dir()
    shutil.rmtree(rank1)
    shutil.copytree(corpus / "shards" / "raw" / "rank_00000", rank1)
    second = run(cfg)
    ids_after = sorted(r["id"] for b in ("raw", "tagged") for r in _read_bucket(corpus, b))
    assert ids_after == ids_before and len(set(ids_after)) == len(ids_after)
    assert second["buckets"] == first["buckets"] and second["balance"]["ok"]
    # a re-run of a finished run changes nothing either
    assert run(cfg)["buckets"] == first["buckets"]


def test_resume_refuses_other_config(tmp_path, messy_input, tokenizer_dir):
    run(_cfg(tmp_path, messy_input, tokenizer_dir, "tag.enabled=false", "filters.language.enabled=false"))
    with pytest.raises(ConfigError, match="tag"):
        run(_cfg(tmp_path, messy_input, tokenizer_dir, "filters.language.enabled=false"))


def test_config_errors():
    with pytest.raises(ConfigError, match="min_score"):
        load_config(DatagenConfig, None, ["tag.min_score=0"])
    with pytest.raises(ConfigError, match="unknown key 'route.foo'"):
        load_config(DatagenConfig, None, ["route.foo=1"])
    with pytest.raises(ConfigError, match="partition"):
        load_config(DatagenConfig, None, ["executor.kind=slurm"])


def test_crashed_task_resumes_without_duplicates(tmp_path, messy_input, tokenizer_dir, monkeypatch):
    """A task that dies after writing part of its shards is re-run on the next call; nothing doubles."""
    from datagen.steps.tokenize import BucketTokenWriter

    clean = run(_cfg(tmp_path / "clean", messy_input, tokenizer_dir, "tokenizer.batch_size=4"))
    cfg = _cfg(tmp_path / "crash", messy_input, tokenizer_dir, "tokenizer.batch_size=4")
    original = BucketTokenWriter.write_batch
    calls = {"n": 0}

    def failing(self, items, tagged=None):
        calls["n"] += self.rank == 1
        if calls["n"] > 3:
            raise RuntimeError("simulated node failure")
        return original(self, items, tagged)

    monkeypatch.setattr(BucketTokenWriter, "write_batch", failing)
    with pytest.raises(RuntimeError, match="simulated node failure"):
        run(cfg)
    corpus = Path(cfg.output)
    assert not (corpus / "logs" / "stage1" / "completions" / "00001").exists()
    assert any((corpus / "shards").glob("*/rank_00001/*.mds"))  # partial output left behind
    monkeypatch.setattr(BucketTokenWriter, "write_batch", original)
    resumed = run(cfg)
    assert resumed["buckets"] == clean["buckets"] and resumed["balance"]["ok"]
    ids = [r["id"] for b in ("raw", "tagged") for r in _read_bucket(corpus, b)]
    assert len(ids) == len(set(ids)) == clean["kept"]


def test_slurm_executors_are_chained(tmp_path, messy_input, tokenizer_dir):
    """executor.kind=slurm builds datatrove Slurm executors (not submitted here) with the config's fields."""
    from datatrove.executor import SlurmPipelineExecutor

    from datagen.pipeline import build_stage1, make_executor

    cfg = _cfg(
        tmp_path,
        messy_input,
        tokenizer_dir,
        "executor.kind=slurm",
        "executor.partition=cpu",
        "executor.tasks=8",
        "executor.time=01:00:00",
        "executor.mem_per_cpu_gb=3",
        "executor.dependency=123",
    )
    steps, _ = build_stage1(cfg, tmp_path / "corpus")
    s1 = make_executor(cfg, steps, tmp_path / "logs" / "stage1", cfg.executor.tasks, "stage1")
    final = make_executor(cfg, [], tmp_path / "logs" / "final", 1, "final", depends=s1)
    assert isinstance(s1, SlurmPipelineExecutor) and s1.tasks == 8 and s1.partition == "cpu"
    assert s1.time == "01:00:00" and s1.mem_per_cpu_gb == 3 and s1.depends_job_id == "123"
    assert final.depends is s1 and final.depends_job_id is None


def test_resume_allows_other_workers_but_not_other_tasks(tmp_path, messy_input, tokenizer_dir):
    first = run(_cfg(tmp_path, messy_input, tokenizer_dir, "filters.language.enabled=false"))
    again = run(_cfg(tmp_path, messy_input, tokenizer_dir, "filters.language.enabled=false", "executor.workers=2"))
    assert again["buckets"] == first["buckets"]
    with pytest.raises(ConfigError, match="executor.tasks"):
        run(_cfg(tmp_path, messy_input, tokenizer_dir, "filters.language.enabled=false", "executor.tasks=3"))
