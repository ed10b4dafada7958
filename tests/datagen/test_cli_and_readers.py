"""CLI commands (demo run, inspect, train-tokenizer), Parquet input and the quality-filter factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datagen.__main__ import main
from infra.corpus import TAG_TOKEN, Manifest


@pytest.mark.slow
def test_demo_config_end_to_end(tmp_path, capsys):
    """The demo config on the embedded corpus: trains tokenizer and fastText classifier, then runs."""
    out = tmp_path / "demo"
    rc = main(["run", "--config", "configs/datagen/demo.yaml", f"output={out}",
               f"tokenizer.path={tmp_path / 'tok'}", f"score.classifier={tmp_path / 'clf'}"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "balance (read = kept + dropped + quarantined) OK" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["balance"]["ok"] and stats["read"] > 0
    assert (tmp_path / "clf" / "classifier.json").is_file()
    meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert meta["metrics"]["n"] == meta["test_size"] > 0
    m = Manifest.load(out)
    assert m.tokenizer.tag_token == TAG_TOKEN and m.tokenizer.tag_id >= 0
    assert set(m.buckets) >= {"raw"} and m.buckets["raw"].tokens > 0
    # non-English documents are dropped by default
    lid = stats["dropped"]["by_filter"]["language"]
    assert all(r.startswith("lang_") and r != "lang_en" for r in lid["reasons"])
    assert main(["inspect", str(out)]) == 0
    table = capsys.readouterr().out
    assert "bucket" in table and "raw" in table and str(stats["read"]) in table


def test_train_tokenizer_cli(tmp_path, labels_file, capsys):
    from infra.tokenizer import load_tokenizer, tag_id

    assert main(["train-tokenizer", f"input={labels_file}", f"output={tmp_path / 'tok'}", "vocab_size=600"]) == 0
    tok = load_tokenizer(tmp_path / "tok", add_tag=False)
    assert tok.eos_token == "<|endoftext|>"
    assert tok(f"a{TAG_TOKEN}b", add_special_tokens=False)["input_ids"].count(tag_id(tok)) == 1
    assert 300 < len(tok) <= 600


def test_cli_reports_config_errors(capsys):
    assert main(["run", "--config", "configs/datagen/demo.yaml", "tag.p=2"]) == 2
    assert "tag.p" in capsys.readouterr().err


def test_parquet_reader_quarantines_rows_without_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datagen.steps import QuarantineStep, QuarantiningParquetReader

    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "content": ["hello world", None, "  "]}), src / "x.parquet")
    (src / "broken.parquet").write_bytes(b"PAR1 not really")
    reader = QuarantiningParquetReader(str(src), text_key="content")
    q = QuarantineStep(str(tmp_path / "q"))
    kept = list(q(reader()))
    assert [d.id for d in kept] == ["a"]
    lines = [json.loads(x) for x in (tmp_path / "q" / "00000.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in lines) == ["empty_text", "missing_text", "unreadable_file"]
    assert {r["line"] for r in lines if r["reason"] != "unreadable_file"} == {2, 3}


def test_quality_filters_by_name():
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter

    from datagen.steps import build_quality_filters

    (f,) = build_quality_filters({"gopher_quality": {"min_doc_words": 5}})
    assert isinstance(f, GopherQualityFilter)
    docs = [Document(text="too short", id="s"),
            Document(text="This is a perfectly ordinary sentence about the weather and the town. " * 5, id="ok")]
    assert [d.id for d in f(docs)] == ["ok"]
    with pytest.raises(ValueError, match="unknown quality filter"):
        build_quality_filters({"nope": {}})
    with pytest.raises(ValueError, match="gopher_quality"):
        build_quality_filters({"gopher_quality": {"no_such_arg": 1}})


def test_llm_stage_hook_writes_through_write_documents(tmp_path, tokenizer_dir):
    """The tokenize helper the LLM stage uses writes readable, merged buckets."""
    from datagen.steps import write_documents
    from infra.corpus import merge_bucket_index, open_bucket
    from infra.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    docs = [(f"A rephrased lesson number {i}.", f"r{i}", 2, "rephrased") for i in range(5)]
    counts = write_documents(tmp_path, tok, docs, rank=3)
    assert counts["rephrased"]["documents"] == 5
    assert merge_bucket_index(tmp_path, "rephrased") == 5
    ds = open_bucket(tmp_path, "rephrased")
    assert ds[0]["tokens"].tolist() == tok(docs[0][0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert sum(len(ds[i]["tokens"]) for i in range(len(ds))) == counts["rephrased"]["tokens"]
