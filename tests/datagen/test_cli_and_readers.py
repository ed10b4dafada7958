"""CLI commands (demo run, inspect, train-tokenizer), Parquet input and the quality-filter factory."""

from __future__ import annotations

import json

import pytest

from datagen.__main__ import main
from infra.corpus import TAG_TOKEN, Manifest


@pytest.mark.slow
def test_demo_config_end_to_end(tmp_path, capsys):
    """The demo config on the embedded corpus: trains the tokenizer, scores with the shipped classifier
    (never with the corpus's reference labels), then runs; the same corpus without labels routes the same."""
    from datagen.classifier import shipped_classifier
    from infra.paths import default_corpus

    shipped = (shipped_classifier() / "classifier.json").read_bytes()
    out = tmp_path / "demo"
    base = ["run", "--config", "configs/datagen/demo.yaml", f"tokenizer.path={tmp_path / 'tok'}"]
    assert main([*base, f"output={out}"]) == 0
    printed = capsys.readouterr().out
    assert "balance (read = kept + dropped + quarantined) OK" in printed
    assert "score decided by" in printed and "combine=classifier" in printed
    stats = json.loads((out / "stats.json").read_text())
    assert stats["balance"]["ok"] and stats["read"] > 0
    assert stats["score"]["decided_by"] == {"classifier": stats["kept"], "label": 0, "agree": 0}
    assert stats["score"]["classifier"] == str(shipped_classifier()) and stats["scores_with_label"] == 0
    assert stats["routes"]["raw"] > 0 and stats["routes"]["rephrase"] + stats["routes"]["refusal"] > 0
    m = Manifest.load(out)
    assert m.tokenizer.tag_token == TAG_TOKEN and m.tokenizer.tag_id >= 0
    assert set(m.buckets) >= {"raw"} and m.buckets["raw"].tokens > 0
    # non-English documents are dropped by default
    lid = stats["dropped"]["by_filter"]["language"]
    assert all(r.startswith("lang_") and r != "lang_en" for r in lid["reasons"])
    assert main(["inspect", str(out)]) == 0
    table = capsys.readouterr().out
    assert "bucket" in table and "raw" in table and str(stats["read"]) in table

    # a user's unlabelled corpus: runs with the shipped classifier; the cached tokenizer, trained on
    # another input, is kept and a new one is trained beside it
    rows = [json.loads(x) for x in default_corpus().read_text().splitlines()]
    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    tok_stamp = (tmp_path / "tok" / "tokenizer.json").stat().st_mtime_ns
    out2 = tmp_path / "mine-corpus"
    assert main([*base, f"input.path={mine}", f"output={out2}"]) == 0
    stats2 = json.loads((out2 / "stats.json").read_text())
    assert stats2["routes"] == stats["routes"] and stats2["score_histogram"] == stats["score_histogram"]
    assert (tmp_path / "tok" / "tokenizer.json").stat().st_mtime_ns == tok_stamp
    beside = [p.name for p in tmp_path.iterdir() if p.name.startswith("tok@")]
    assert len(beside) == 1
    prepared = json.loads((out2 / "logs" / "prepared.json").read_text())
    assert prepared["tokenizer"] == str(tmp_path / beside[0])
    assert (shipped_classifier() / "classifier.json").read_bytes() == shipped


@pytest.mark.slow
def test_web_config_runs_on_an_unlabelled_corpus(tmp_path, tokenizer_dir):
    import gzip

    from datagen.classifier import default_labels
    from infra.paths import default_corpus

    # real prose (inaugural addresses) and the demo corpus's web-like pages, without any labels
    prose = [json.loads(x) for x in gzip.open(default_labels().parent / "eval" / "inaugural.jsonl.gz", "rt")][:25]
    pages = [json.loads(x) for x in default_corpus().read_text().splitlines()][:15]
    # and a copy and a near-copy (another footer) of two passages, which the corpus-wide dedup removes
    copies = [{"id": "copy", "text": prose[0]["text"]}, {"id": "near", "text": prose[1]["text"] + " Read more."}]
    src = tmp_path / "crawl.jsonl"
    src.write_text("".join(json.dumps({"id": d["id"], "text": d["text"]}) + "\n" for d in prose + pages + copies))
    out = tmp_path / "web"
    args = ["run", "--config", "configs/datagen/web.yaml", f"input.path={src}", f"output={out}"]
    assert main([*args, f"tokenizer.path={tokenizer_dir}", "executor.tasks=1"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["balance"]["ok"] and stats["read"] == 42 and stats["kept"] >= 20
    assert stats["dedup"]["exact"] == {"scope": "corpus", "removed": 1}
    assert stats["dedup"]["near"] == {"removed": 1, "to_remove": 1}
    assert stats["score"]["decided_by"]["classifier"] == stats["kept"] > 0
    assert set(stats["dropped"]["by_filter"]) >= {"gopher_quality", "c4_quality", "fineweb_quality"}


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
    docs = [
        Document(text="too short", id="s"),
        Document(text="This is a perfectly ordinary sentence about the weather and the town. " * 5, id="ok"),
    ]
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


def test_warc_input_is_extracted_and_counted(tmp_path, tokenizer_dir, fasttext_classifier):
    """WARC responses go through Trafilatura; records without text are quarantined; the run balances."""
    from io import BytesIO

    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    from datagen.config import DatagenConfig
    from datagen.pipeline import run
    from infra.config import load_config

    para = (
        "<p>The town council met on Tuesday to discuss the new library hours, the budget for the school "
        "garden and the repairs to the old bridge near the river, which had been closed since spring.</p>"
    )
    pages = {
        "http://a.example/1": f"<html><body><article><h1>Council news</h1>{para * 4}</article></body></html>",
        "http://a.example/2": "<html><body><script>var x = 1;</script></body></html>",
        "http://a.example/3": "",
    }
    src = tmp_path / "warc"
    src.mkdir()
    with open(src / "x.warc.gz", "wb") as f:
        w = WARCWriter(f, gzip=True)
        for url, html in pages.items():
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.0")
            w.write_record(w.create_warc_record(url, "response", payload=BytesIO(html.encode()), http_headers=headers))
        # records that are no documents: a request, and a PNG response as a crawler identifies it
        w.write_record(
            w.create_warc_record("http://a.example/1", "request", payload=BytesIO(b"GET /1 HTTP/1.0\r\n\r\n"))
        )
        png = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.0")
        w.write_record(
            w.create_warc_record(
                "http://a.example/logo.png",
                "response",
                payload=BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(64)),
                http_headers=png,
                warc_headers_dict={"WARC-Identified-Payload-Type": "image/png"},
            )
        )
    cfg = load_config(
        DatagenConfig,
        None,
        [
            f"output={tmp_path / 'corpus'}",
            f"input.path={src}",
            "input.format=warc",
            f"tokenizer.path={tokenizer_dir}",
            f"score.classifier={fasttext_classifier}",
            "filters.language.enabled=false",
            "executor.tasks=1",
            "executor.workers=1",
        ],
    )
    stats = run(cfg)
    # datatrove's WarcReader skips the record without payload before it becomes a document
    assert stats["read"] == 2 and stats["kept"] == 1 and stats["balance"]["ok"]
    # and every record that did not become a document is counted, by why
    assert stats["read_skipped"] == {"non_html": 1, "non_html_or_undecodable": 1, "warc_request": 1}
    # the page nothing could be extracted from is written aside with its HTML, like any dropped document
    dropped = [
        json.loads(x) for f in (tmp_path / "corpus" / "dropped" / "html_extraction").glob("*.jsonl") for x in f.open()
    ]
    assert [d["metadata"]["filter_reason"] for d in dropped] == ["empty_extraction"]
    assert "<script>var x = 1;</script>" in dropped[0]["text"]
    assert stats["dropped"]["by_filter"]["html_extraction"] == {"total": 1, "reasons": {"empty_extraction": 1}}
    pending = [
        json.loads(x) for f in (tmp_path / "corpus" / "pending").rglob("*.jsonl") for x in f.read_text().splitlines()
    ]
    kept_text = pending[0]["text"] if pending else None
    if kept_text is not None:  # routed to the LLM stage: the extracted text, not HTML
        assert "<p>" not in kept_text and "town council" in kept_text
