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
def test_every_suite_runs_on_a_trainer_checkpoint(tiny_run, tmp_path):
    from evalkit.config import SUITES

    out = tmp_path / "res"
    rc = main(
        [
            "run",
            "--model",
            str(tiny_run),
            "--suite",
            ",".join(SUITES),
            "--out",
            str(out),
            "data.limit=4",
            "decoding.max_new_tokens=6",
            "decoding.beams=2",
            "decoding.top_n=4",
            "capability.limit=4",
            "judges.use=[{kind: keyword}, {kind: llm, model: self}, {kind: classifier}]",
            "finetune.overrides=[train.train_steps=1, train.warmup_steps=0, train.seq_length=64]",
        ]
    )
    assert rc == 0, (out / "errors.log").read_text() if (out / "errors.log").exists() else rc
    res = json.loads((out / "results.json").read_text())
    assert set(res["suites"]) == set(SUITES)
    assert res["model"]["prompt_style"] == "completion"  # no chat template: completion-style attacks
    assert (out / f"{tiny_run.name}-hf" / "config.json").is_file()  # exported by `trainer export-hf`
    rows = [json.loads(x) for x in (out / "samples" / "asr.jsonl").read_text().splitlines()]
    assert rows[0]["id"].startswith("completion")  # the completion-style harmful set
    assert set(rows[0]["verdicts"]) == {"keyword", "llm_self_refusal", "classifier"}
    assert 0 <= rows[0]["judge_details"]["classifier"]["prob"] <= 1
    s = res["suites"]
    assert s["asr"]["judges"]["classifier"]["n"] == 4 and "keyword~classifier" in s["asr"]["kappa"]
    assert s["safebeam"]["safebeam"]["judges"]["keyword"]["n"] == 4 and s["safebeam"]["beams"] == 2
    assert len(s["probes"]["layers"]) == res["model"]["num_layers"] + 1
    assert s["abliteration"]["max_proj_after"] < 1e-4 < s["abliteration"]["max_proj_before"]
    assert s["steering"]["layer"] == 1 and {"harmless_plus", "harmful_minus"} <= set(s["steering"])
    assert s["finetune-robustness"]["after"]["judges"]["keyword"]["n"] == 4
    assert (out / "finetune" / "hf" / "config.json").is_file()
    assert s["self-refusal"]["self_report"]["n"] == 8 and 0 <= s["capability"]["mean_acc"] <= 1
    assert s["overrefusal"]["judges"]["keyword"]["n"] == 4
    assert len(list((out / "plots").glob("*.png"))) >= 8
