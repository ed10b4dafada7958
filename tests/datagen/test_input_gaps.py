"""Input that used to slip through or stop a run badly: NULs and lone surrogates, invalid UTF-8's original
bytes, an empty input folder, a filter typo, and the name of a language-filter drop."""

from __future__ import annotations

import base64
import json

from datagen.__main__ import main
from datagen.config import DatagenConfig
from datagen.pipeline import run
from infra.config import load_config
from infra.corpus import open_bucket
from tests.datagen.conftest import make_docs, write_jsonl


def _args(tmp_path, src, tokenizer_dir, *extra):
    return [
        f"output={tmp_path / 'corpus'}",
        f"input.path={src}",
        f"tokenizer.path={tokenizer_dir}",
        "score.classifier=null",
        "score.combine=label",
        "tag.enabled=false",
        "filters.language.enabled=false",
        "executor.tasks=1",
        *extra,
    ]


def test_nul_and_lone_surrogate_are_repaired_and_invalid_utf8_keeps_its_bytes(tmp_path, tokenizer_dir):
    from infra.tokenizer import load_tokenizer

    good = make_docs(3, seed=9, levels=(0,))
    bad_bytes = b'{"id": "latin1", "text": "caf\xe9 cr\xe8me"}'
    src = write_jsonl(
        tmp_path / "in" / "a.jsonl",
        [
            *good,
            # valid JSON escapes that cannot travel as UTF-8 text or into a tokenizer as they are
            b'{"id": "nul", "text": "The report\\u0000 was filed on time by the clerk.", "score": 0}\n',
            b'{"id": "surrogate", "text": "A lone \\ud800 surrogate in an otherwise plain sentence.", "score": 0}\n',
            bad_bytes + b"\n",
        ],
    )
    stats = run(load_config(DatagenConfig, None, _args(tmp_path, src.parent, tokenizer_dir)))
    assert stats["balance"]["ok"]
    assert stats["read"] == 6 and stats["kept"] == 5
    assert stats["quarantined"]["reasons"] == {"invalid_utf8": 1}
    assert stats["repaired"] == {"nul": 1, "surrogate": 1}
    corpus = tmp_path / "corpus"
    ds = open_bucket(corpus, "raw")
    rows = {ds[i]["id"]: ds[i] for i in range(len(ds))}
    tok = load_tokenizer(corpus / "tokenizer")
    assert tok.decode(rows["nul"]["tokens"][:-1]) == "The report was filed on time by the clerk."
    assert "\ufffd" in tok.decode(rows["surrogate"]["tokens"][:-1])
    q = [json.loads(x) for x in (corpus / "quarantine" / "00000.jsonl").read_text().splitlines()]
    assert len(q) == 1 and q[0]["reason"] == "invalid_utf8" and q[0]["line"] == 6
    assert base64.b64decode(q[0]["raw_base64"]) == bad_bytes  # the original bytes, not a lossy decode


def test_empty_input_folder_is_a_clear_error(tmp_path, tokenizer_dir, capsys):
    (tmp_path / "in").mkdir()
    assert main(["run", *_args(tmp_path, tmp_path / "in", tokenizer_dir)]) == 2
    err = capsys.readouterr().err
    assert f"input.path: {tmp_path / 'in'} holds no files" in err and "Traceback" not in err
    (tmp_path / "in2").mkdir()
    write_jsonl(tmp_path / "in2" / "a.jsonl", make_docs(2))
    assert main(["run", *_args(tmp_path, tmp_path / "in2", tokenizer_dir, "input.glob=*.parquet")]) == 2
    assert "matching input.glob='*.parquet'" in capsys.readouterr().err


def test_filter_typo_fails_before_anything_is_written_so_the_fix_can_rerun(tmp_path, tokenizer_dir, capsys):
    src = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(12, seed=2))
    # a value only the filter's constructor refuses (a misspelt key already fails when the config loads)
    typo = "filters.quality={gopher_quality: {stop_words: 5}}"
    assert main(["run", *_args(tmp_path, src, tokenizer_dir, typo)]) == 2
    assert "filters.quality.gopher_quality: 'int' object is not iterable" in capsys.readouterr().err
    assert not (tmp_path / "corpus" / "datagen_config.yaml").exists()
    fixed = "filters.quality={gopher_quality: {min_doc_words: 5}}"
    assert main(["run", *_args(tmp_path, src, tokenizer_dir, fixed)]) == 0  # same output folder


def test_allowed_language_below_the_threshold_is_not_reported_as_a_dropped_language():
    from datatrove.data import Document

    from datagen.steps import LanguageIDFilter

    f = LanguageIDFilter(languages=["en"], threshold=0.999)
    doc = Document(text="ok then, see you", id="x")
    kept = f.filter(doc)
    assert doc.metadata["language"] == "en" and doc.metadata["language_score"] < 0.999
    assert kept == (False, "low_confidence_en")
    other = Document(text="Le conseil municipal s'est réuni mardi pour discuter des horaires.", id="y")
    assert f.filter(other) == (False, "lang_fr")


def test_inspect_warns_about_buckets_a_curriculum_would_reread(tmp_path, tokenizer_dir, capsys):
    src = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(30, seed=4))
    assert main(["run", *_args(tmp_path, src, tokenizer_dir, "tag.enabled=true", "tag.p=0.1")]) == 0
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    raw_tokens = stats["buckets"]["raw"]["tokens"]
    capsys.readouterr()
    budget = 20 * raw_tokens
    curriculum = "configs/trainer/curricula/intervention_20.yaml"
    assert main(["inspect", str(tmp_path / "corpus"), "--curriculum", curriculum, "--tokens", str(budget)]) == 0
    out = capsys.readouterr().out
    assert "balance (read = kept + dropped + quarantined)" in out
    # the raw bucket gets 100% of the first 20% and 70% of the rest: 0.76 of the budget, 15.2 passes
    assert f"WARNING: 'raw' holds {raw_tokens:,} tokens" in out and "would be read 15.2 times" in out
    # the LLM buckets of this corpus are empty: a curriculum that weights them cannot be served
    assert "the curriculum gives 'rephrased' 12.0% of the tokens but the bucket is empty" in out
    assert main(["inspect", str(tmp_path / "corpus"), "--curriculum", curriculum]) == 2


def test_split_files_keep_every_task_busy_and_the_counts_exact(tmp_path, tokenizer_dir, messy_input):
    import gzip
    import re
    import shutil

    # one large plain file and one gzipped file, with bad lines scattered through them
    src = tmp_path / "in"
    src.mkdir()
    big = make_docs(160, seed=5)
    lines = [json.dumps(d).encode() + b"\n" for d in big]
    for i in (0, 37, 81, 159):
        lines.insert(i, b'{"id": "broken", "text": "unterminated\n')
    (src / "big.jsonl").write_bytes(b"".join(lines))
    with gzip.open(src / "small.jsonl.gz", "wb") as f:
        f.writelines(json.dumps(d).encode() + b"\n" for d in make_docs(41, seed=6))
    shutil.copy(messy_input["dir"] / "part-c.jsonl.gz", src / "corrupt.jsonl.gz")  # not gzip at all
    runs = {}
    for tasks, split in ((1, "false"), (4, "true")):
        out = tmp_path / f"c{tasks}"
        cfg = load_config(
            DatagenConfig,
            None,
            [
                *_args(tmp_path, src, tokenizer_dir, f"executor.tasks={tasks}", f"input.split_files={split}"),
                "executor.progress_s=0.000001",  # a progress line after every document
                f"output={out}",
            ],
        )
        runs[tasks] = (run(cfg), out)
    one, four = runs[1][0], runs[4][0]
    assert four["balance"]["ok"] and four["tasks"] == 4
    for key in ("read", "kept", "quarantined", "dropped"):
        assert four[key] == one[key], key
    assert four["read"] == 164 + 41 + 1 and four["quarantined"]["reasons"] == {
        "malformed_json": 4,
        "unreadable_file": 1,
    }
    # every task read documents of both files
    per_task = [json.loads(p.read_text()) for p in sorted((runs[4][1] / "logs" / "stage1" / "stats").glob("*.json"))]
    docs = [(d["total"] if isinstance(d, dict) else d) for d in (t[0]["stats"]["documents"] for t in per_task)]
    assert all(d > 30 for d in docs), docs
    q = sorted(
        json.loads(x)["line"]
        for p in (runs[4][1] / "quarantine").glob("*.jsonl")
        for x in p.read_text().splitlines()
        if json.loads(x)["reason"] == "malformed_json"
    )
    assert q == [1, 38, 82, 160]  # the lines they were written at, found from four byte ranges
    kept = {t: _raw_ids(o) for t, (_, o) in runs.items()}
    assert kept[1] == kept[4]
    th = four["throughput"]["stage1"]
    # the task-seconds are datatrove's own step timings, summed
    step_seconds = sum((s.get("time_stats") or {}).get("total", 0.0) for t in per_task for s in t)
    assert th["tasks"] == 4 and th["documents"] == four["read"] and th["task_seconds"] == round(step_seconds, 3)
    from datagen.stats import format_summary

    assert re.search(
        rf"throughput stage1 +{four['read']} documents in [\d.]+ task-seconds over 4 tasks", format_summary(four)
    )
    # each task logs documents/s, its share done and an ETA, then a summary line at the end of the task
    for rank in range(4):
        log_text = (runs[4][1] / "logs" / "stage1" / "logs" / f"task_{rank:05d}.log").read_text()
        progress = re.findall(rf"progress task {rank + 1}/4: ([\d,]+) documents \(\d[\d,]*/s\), .*ETA \S+", log_text)
        assert len(progress) >= 30, log_text[-2000:]
        summary = re.search(r"read ([\d,]+) documents \(.*/s\), .* \(100%\), 3/3 files, ETA 0:00:00 in", log_text)
        assert summary, log_text[-2000:]
        assert int(summary.group(1).replace(",", "")) == docs[rank]


def _raw_ids(corpus) -> list[str]:
    ds = open_bucket(corpus, "raw")
    ids = [ds[i]["id"] for i in range(len(ds))]
    for f in (corpus / "pending").rglob("*.jsonl"):
        ids += [json.loads(x)["id"] for x in f.read_text().splitlines() if x.strip()]
    return sorted(ids)


def test_unwritable_output_is_a_clear_error_before_any_work(tmp_path, tokenizer_dir, capsys):
    src = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(2))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", *_args(tmp_path, src, tokenizer_dir), f"output={blocker / 'corpus'}"]) == 2
    err = capsys.readouterr().err
    assert f"output: cannot write to {blocker / 'corpus'}" in err and "Traceback" not in err
