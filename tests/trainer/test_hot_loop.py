"""The training loop reads nothing back from the device per step: host syncs grow with the number of
flushes (``train.log_interval``) and NaN checks (``train.nan_check_interval``), not with the steps."""

from __future__ import annotations

import json
import subprocess
import sys

from infra.paths import REPO_ROOT
from tests.trainer.conftest import read_metrics, tiny_args, trainer_env

STEPS, LOG_EVERY, NAN_EVERY = 12, 6, 4


def test_host_syncs_per_flush_not_per_step(tiny_corpus, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "syncs.json"
    args = tiny_args(run_dir, tiny_corpus, steps=STEPS)
    assert args[:2] == ["train", "--config"]
    overrides = [
        a for a in args[3:] if not a.startswith(("train.save_interval=", "train.log_interval=", "logging.tensorboard="))
    ]
    overrides += [
        "train.save_interval=0",  # one checkpoint, at the end (its syncs are counted apart)
        f"train.log_interval={LOG_EVERY}",
        f"train.nan_check_interval={NAN_EVERY}",
        "logging.tensorboard=false",
        "train.device=cpu",
    ]
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "trainer" / "count_host_syncs.py"), str(out), args[2], *overrides],
        cwd=REPO_ROOT,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "train.device=cpu: training on the CPU" in proc.stderr
    got = json.loads(out.read_text())
    calls = got["calls"]
    assert got["summary"]["step"] == STEPS
    # every step's record is still written (at the flushes)
    assert [r["step"] for r in read_metrics(run_dir)] == list(range(1, STEPS + 1))
    assert got["flushes"] == [LOG_EVERY, STEPS]
    in_steps = [c for c in calls if c[0] in ("step", "loop")]
    assert in_steps == [], in_steps[:10]  # nothing inside train_step or between the loop's pieces
    flush = [c for c in calls if c[0] == "flush"]
    nan = [c for c in calls if c[0] == "nan_check"]
    # one read-back per flush (losses, grad norms, stop flag together) and one per NaN check between
    # flushes (steps 4 and 8; 12 is a flush): 4 for 12 steps, where a per-step loop makes 12 or more
    assert len(flush) == len(got["flushes"]), flush
    assert len(nan) == len([s for s in range(1, STEPS + 1) if s % NAN_EVERY == 0 and s % LOG_EVERY]), nan
    assert len(flush) + len(nan) < STEPS / 2
    # the wrapped entry points do see the syncs that exist: the checkpoint's
    assert any(c[0] == "save" for c in calls)
