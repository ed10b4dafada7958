"""``launch status`` without a cluster: fake ``scontrol``/``sacct`` on PATH that answer as Slurm does once
the controller has forgotten finished jobs (with and without an accounting database)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from launch.__main__ import main
from launch.plan import job_states

FORGOTTEN = 'echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1'


def _bin(folder: Path, scontrol: str, sacct: str) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("scontrol", scontrol), ("sacct", sacct)):
        p = folder / name
        p.write_text(f'#!/bin/bash\necho "$*" >> {folder}/{name}.calls\n{body}\n')
        p.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def test_sacct_answers_for_jobs_the_controller_forgot(tmp_path):
    # accounting database: one row per job and array element, plus steps that are not jobs
    sacct = (
        'case "$*" in *-X*) printf "%s\\n" "123|COMPLETED|0:0" "124_0|FAILED|1:0" "124_1|CANCELLED by 0|0:15" '
        '"124_1.batch|CANCELLED|0:15";; *) exit 1;; esac'
    )
    env = _bin(tmp_path / "bin", FORGOTTEN, sacct)
    states = job_states(["123", "124"], env=env)
    assert states == {
        "123": {"state": "COMPLETED", "exit_code": "0:0", "source": "sacct"},
        "124_0": {"state": "FAILED", "exit_code": "1:0", "source": "sacct"},
        "124_1": {"state": "CANCELLED", "exit_code": "0:15", "source": "sacct"},
    }


def test_sacct_completion_records_without_accounting(tmp_path, capsys, monkeypatch):
    # no accounting storage: `sacct -X` fails, `sacct -c` reads the job completion records
    sacct = (
        'case "$*" in *-X*) echo "Slurm accounting storage is disabled" >&2; exit 1;; '
        '*"-c "*"-j 77") echo "77|TIMEOUT|0:0";; esac'
    )
    env = _bin(tmp_path / "bin", FORGOTTEN, sacct)
    launch_dir = tmp_path / "l1"
    launch_dir.mkdir()
    record = {
        "command": "train",
        "time": "2026-12-01T00:00:00+00:00",
        "status": "submitted",
        "jobs": [{"key": "train", "job_id": "77"}, {"key": "eval", "job_id": "78"}],
    }
    (launch_dir / "jobs.json").write_text(json.dumps({"submissions": [record]}))
    monkeypatch.setenv("PATH", env["PATH"])
    assert main(["status", str(launch_dir)]) == 0
    out = capsys.readouterr().out
    assert "train            77           TIMEOUT      exit=0:0 (sacct)" in out
    # a job neither knows stays UNKNOWN, with why
    assert "78           UNKNOWN" in out and "neither scontrol nor sacct knows job 78" in out
    calls = (tmp_path / "bin" / "sacct.calls").read_text().splitlines()
    assert calls[0].startswith("-X ") and calls[1].startswith("-c ")


def test_scontrol_first_while_it_knows_the_job(tmp_path):
    scontrol = 'echo "JobId=5 JobName=x JobState=RUNNING Restarts=1 ExitCode=0:0 Reason=None Dependency=(null)"'
    env = _bin(tmp_path / "bin", scontrol, "exit 1")
    assert job_states(["5"], env=env)["5"]["state"] == "RUNNING"
    assert not (tmp_path / "bin" / "sacct.calls").exists()
