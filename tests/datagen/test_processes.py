"""A killed run leaves no process behind; a full disk or an unwritable output ends a run with one line
naming the path."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from datagen.__main__ import main
from tests.datagen.conftest import make_docs, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _args(tmp_path, src, tokenizer_dir, *extra):
    return [
        f"output={tmp_path / 'corpus'}",
        f"input.path={src}",
        f"tokenizer.path={tokenizer_dir}",
        "score.classifier=null",
        "score.combine=label",
        "tag.enabled=false",
        "filters.language.enabled=false",
        "filters.exact_dedup=false",
        *extra,
    ]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux only")
def test_killed_run_leaves_no_manager_or_worker_behind(tmp_path, tokenizer_dir):
    for i in range(2):
        write_jsonl(tmp_path / "in" / f"{i}.jsonl", make_docs(400, seed=i))
    slow = "filters.quality={tests.datagen.user_filters:Sleep: {seconds: 0.05}}"
    cmd = [sys.executable, "-m", "datagen", "run", *_args(tmp_path, tmp_path / "in", tokenizer_dir, slow)]
    cmd += ["executor.tasks=2", "executor.workers=2", "executor.progress_s=0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        # the run's manager, the forkserver, its two workers (and multiprocess' resource tracker)
        while len(seen) < 4 and time.monotonic() < deadline and proc.poll() is None:
            seen |= _descendants(proc.pid)
            time.sleep(0.1)
        time.sleep(0.5)
        seen |= _descendants(proc.pid)
        assert proc.poll() is None and len(seen) >= 4, f"the run ended or started no workers: {seen}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while any(map(_alive, seen)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in seen if _alive(p)]
    finally:
        for p in seen | {proc.pid}:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def test_full_disk_is_one_line_naming_the_path(tmp_path, tokenizer_dir, monkeypatch, capfd):
    from datagen.steps import tokenize

    src = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(20))
    shard = tmp_path / "corpus" / "shards" / "raw" / "rank_00000" / "shard.00000.mds"

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(shard))

    monkeypatch.setattr(tokenize.BucketShardWriter, "write", full)
    capfd.readouterr()
    assert main(["run", *_args(tmp_path, src, tokenizer_dir, "executor.tasks=1")]) == 2
    err = capfd.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: output: cannot write {shard}: No space left on device (ENOSPC)"
    assert "Traceback" not in err


def test_real_full_disk(tmp_path, tokenizer_dir, capfd):
    """The same on a 256 KB tmpfs (needs root and mount; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(1500))
        capfd.readouterr()
        assert main(["run", *_args(tmp_path, src, tokenizer_dir, "executor.tasks=1"), f"output={disk / 'c'}"]) == 2
        err = capfd.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"error: output: cannot write {disk / 'c'}") and last.endswith("(ENOSPC)")
        assert "Traceback" not in err
    finally:
        subprocess.run(["umount", "-l", str(disk)])
