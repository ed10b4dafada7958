"""``launch.preflight`` where torch is not importable (a login node with the base install): the layout
check runs in the job's virtualenv, or is skipped with a warning; evalkit's config checked as
``evalkit run`` loads it; ``--version``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from infra.paths import REPO_ROOT
from launch import preflight
from launch.__main__ import main

CONFIG = str(REPO_ROOT / "configs" / "trainer" / "smollm2_1.7b.yaml")
FITS = ["data.corpus=/x/corpus", "train.warmup_steps=10"]


def _no_torch(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))


def test_layout_checked_in_the_jobs_virtualenv_without_torch_here(monkeypatch):
    _no_torch(monkeypatch)
    res = preflight.check_trainer(
        "train", CONFIG, [*FITS, "parallel.pp=5"], workdir=REPO_ROOT, world_size=10, job_python=Path(sys.executable)
    )
    assert res.errors == [
        f"train: parallel.pp=5 does not divide the 24 layers (model.preset smollm2-1.7b) ({CONFIG} with the "
        "job's overrides, on 10 ranks)"
    ]
    assert res.inputs == {"data.corpus": "/x/corpus"}


def test_layout_skipped_with_a_warning_without_torch_or_virtualenv(monkeypatch):
    _no_torch(monkeypatch)
    res = preflight.check_trainer("train", CONFIG, [*FITS, "parallel.pp=5"], workdir=REPO_ROOT, world_size=8)
    assert (
        res.errors == [] and "the parallel layout (TP/PP/DP against heads, layers and batch) was not" in res.warnings[0]
    )
    # the config itself is still checked in-process (no torch needed for the loader)
    bad = preflight.check_trainer("train", CONFIG, [*FITS, "train.lrr=1"], workdir=REPO_ROOT, world_size=8)
    assert "unknown key 'train.lrr'" in bad.errors[0]


def test_eval_config_checked_as_evalkit_loads_it():
    ok = preflight.check_eval("eval", "asr,overrefusal", ["data.limit=5"], ["/m"], workdir=REPO_ROOT)
    assert ok.errors == [] and ok.config.suites == ["asr", "overrefusal"] and ok.config.data.limit == 5
    suite = preflight.check_eval("eval", "asr,nosuch", [], ["/m"], workdir=REPO_ROOT)
    assert "unknown suite(s) ['nosuch']" in suite.errors[0]
    typo = preflight.check_eval("eval", "asr", ["decoding.max_new_tokenz=8"], ["/m"], workdir=REPO_ROOT)
    assert "configs/evalkit/default.yaml" in typo.errors[0] and "decoding.max_new_tokenz" in typo.errors[0]
    flag = preflight.check_eval("eval", "asr", ["--bogus"], ["/m"], workdir=REPO_ROOT)
    assert "eval.extra_args ['--bogus'] are neither --config FILE nor key=value overrides" in flag.errors[0]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("python -m launch ")
