"""A model that DOES refuse, made with the trainer's SFT mode on the shipped refusal set, then
abliterated: refusals on held-out harmful prompts must fall. Also the finetune-robustness suite."""

import json

import pytest

from evalkit.config import EvalConfig
from evalkit.model import HFModel
from evalkit.suites import Context, run_abliteration
from infra.config import load_config

SFT_STEPS = 30


@pytest.fixture(scope="module")
def refusal_model_dir(tmp_path_factory, smollm2_dir, repo_root):
    from evalkit.finetune import sft

    run = tmp_path_factory.mktemp("refusal_sft") / "run"
    return sft(smollm2_dir, repo_root / "evalkit/data/sft/refusal_train.jsonl", run, "configs/trainer/sft.yaml",
               [f"train.train_steps={SFT_STEPS}", "train.lr=1e-4", "train.min_lr=1e-5"], timeout_s=1800)


@pytest.mark.slow
def test_refusal_sft_then_abliteration_lowers_refusals(refusal_model_dir, tmp_path):
    cfg = load_config(EvalConfig, None, [f"model={refusal_model_dir}", f"out={tmp_path}",
                                         "decoding.max_new_tokens=24", "decoding.batch_size=10"])
    model = HFModel(refusal_model_dir)
    res = run_abliteration(Context(model, cfg, tmp_path), model, tmp_path / "abliterated")
    before, after = res.metrics["before"], res.metrics["after"]
    # the finetuned model refuses most held-out harmful prompts, few harmless ones
    assert before["refusal_rate_harmful"] >= 0.5
    assert before["refusal_rate_harmful"] - before["refusal_rate_harmless"] >= 0.3
    # abliteration removes the direction and with it most refusals
    assert res.metrics["max_proj_after"] < 1e-4
    assert res.metrics["refusal_rate_drop"] >= 0.3
    assert after["refusal_score_harmful"] < before["refusal_score_harmful"]
    saved = HFModel(tmp_path / "abliterated")
    assert saved.num_layers == model.num_layers
    # the saved weights are the edited ones; the in-memory model was restored
    w_saved = saved.layers()[5].mlp.down_proj.weight
    w_orig = model.layers()[5].mlp.down_proj.weight
    assert not bool((w_saved == w_orig).all())


@pytest.mark.slow
def test_finetune_robustness_suite_from_the_cli(refusal_model_dir, tmp_path, repo_root):
    from evalkit.__main__ import main

    out = tmp_path / "ft"
    rc = main(["run", "--model", str(refusal_model_dir), "--suite", "finetune-robustness", "--out", str(out),
               "data.limit=4", "decoding.max_new_tokens=16",
               "finetune.overrides=[train.train_steps=3, train.lr=5e-5]"])
    assert rc == 0, (out / "errors.log").read_text() if (out / "errors.log").exists() else rc
    m = json.loads((out / "results.json").read_text())["suites"]["finetune-robustness"]
    assert (out / "finetune" / "hf" / "config.json").is_file()
    assert m["asr_delta"] == pytest.approx(m["asr_after"] - m["asr_before"])
    assert m["before"]["judges"]["keyword"]["n"] == m["after"]["judges"]["keyword"]["n"] == 4
    stages = [json.loads(x)["stage"] for x in (out / "samples" / "finetune-robustness.jsonl").read_text().splitlines()]
    assert stages.count("before") == stages.count("after") == 4
