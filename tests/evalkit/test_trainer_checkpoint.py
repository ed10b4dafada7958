"""evalkit on a checkpoint written by the trainer: exported automatically, tag-aware SafeBeam works."""

import json

import pytest

from evalkit.__main__ import main


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.trainer.conftest import build_tiny_corpus, run_trainer, tiny_args

    root = tmp_path_factory.mktemp("ek_trainer")
    corpus = build_tiny_corpus(root / "corpus")
    run_dir = root / "run"
    run_trainer(*tiny_args(run_dir, corpus, "logging.tensorboard=false", steps=8))
    return run_dir


@pytest.mark.slow
def test_suites_run_on_a_trainer_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "res"
    rc = main(["run", "--model", str(tiny_run), "--suite", "asr,probes,safebeam", "--out", str(out),
               "data.limit=4", "decoding.max_new_tokens=6", "decoding.beams=2", "decoding.top_n=4"])
    assert rc == 0, (out / "errors.log").read_text() if (out / "errors.log").exists() else rc
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["prompt_style"] == "completion"  # no chat template: completion-style attacks
    assert (out / f"{tiny_run.name}-hf" / "config.json").is_file()  # exported by `trainer export-hf`
    rows = [json.loads(x) for x in (out / "samples" / "asr.jsonl").read_text().splitlines()]
    assert rows[0]["id"].startswith("completion")  # the completion-style harmful set
    sb = res["suites"]["safebeam"]
    assert sb["safebeam"]["judges"]["keyword"]["n"] == 4 and sb["beams"] == 2
    assert len(res["suites"]["probes"]["layers"]) == res["model"]["num_layers"] + 1
