"""Checkpoints that cannot corrupt a run or run code, and resumes that refuse what they cannot honour.

Every case starts from copies of one real run (megatron dist checkpoints at steps 4, 8 and 12), rewound
to step 8, then damaged or resumed with other settings through the trainer's CLI. A resume that falls
back must end bit-identical to the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from infra.paths import REPO_ROOT
from tests.trainer.conftest import read_metrics, run_trainer, tiny_args, trainer_env
from trainer import checkpoint as ckpt
from trainer import checkpoint_files as cf

STEPS = 12
KEEP = "train.keep_last=3"


@pytest.fixture(scope="module")
def base_run(tiny_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("trust") / "run"
    run_trainer(*tiny_args(run, tiny_corpus, KEEP, steps=STEPS))
    return run


def rewound(base: Path, tmp_path: Path, name: str = "run") -> Path:
    """A copy of the base run as it stood after step 8: iter_0000012 gone, ``latest`` naming iter_0000008."""
    run = tmp_path / name
    shutil.copytree(base, run)
    shutil.rmtree(run / "checkpoints" / "iter_0000012")
    (run / "checkpoints" / "latest").write_text("iter_0000008\n")
    return run


def resume(run: Path, corpus: Path, *extra: str):
    return run_trainer(*tiny_args(run, corpus, KEEP, *extra, steps=STEPS), check=False)


def record(run: Path, step: int) -> dict:
    return next(r for r in read_metrics(run) if r["step"] == step)


def regenerate_manifest(ckpt_dir: Path) -> None:
    """What an attacker who controls the folder would do: checksums that match the planted files."""
    cf.write_manifest(ckpt_dir, cf.hash_share(ckpt_dir, cf.checkpoint_files(ckpt_dir), 0, 1))


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ----------------------------------------------------------------------------------------------
# Corruption: named, moved aside, fall back to the newest complete checkpoint
# ----------------------------------------------------------------------------------------------


def _flip(p: Path) -> str:
    data = bytearray(p.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    p.write_bytes(bytes(data))
    return "__0_0.distcp: SHA-256 differs from the manifest"


def _truncate(p: Path) -> str:
    size = p.stat().st_size
    p.write_bytes(p.read_bytes()[: size // 2])
    return f".metadata: {size // 2} bytes, the manifest says {size}"


def _delete(p: Path) -> str:
    p.unlink()
    return "ranks/rank_00000.json: missing"


@pytest.mark.parametrize(
    "damage,target",
    [(_flip, "__0_0.distcp"), (_truncate, ".metadata"), (_delete, "ranks/rank_00000.json")],
    ids=["flipped-bytes", "truncated", "deleted"],
)
def test_damaged_checkpoint_is_named_moved_aside_and_the_run_falls_back(
    damage, target, base_run, tiny_corpus, tmp_path
):
    run = rewound(base_run, tmp_path)
    expected = damage(run / "checkpoints" / "iter_0000008" / target)
    proc = resume(run, tiny_corpus)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint iter_0000008 cannot be used" in proc.stderr and expected in proc.stderr
    assert "resuming from iter_0000004, the newest usable checkpoint" in proc.stderr
    assert (run / "checkpoints" / "iter_0000008.corrupt" / "manifest.json").is_file()  # kept for inspection
    # resumed from step 4 and trained to 12: the same numbers as the run that was never damaged
    for step in (5, 8, 12):
        got, want = record(run, step), record(base_run, step)
        assert (got["loss"], got["grad_norm"], got["lr"]) == (want["loss"], want["grad_norm"], want["lr"])
    seg = json.loads((run / "segments.jsonl").read_text().splitlines()[-1])
    assert seg["from_checkpoint"] == "iter_0000004" and seg["step"] == 4


def test_two_ranks_agree_on_the_fallback(base_run, tiny_corpus, tmp_path):
    # each rank verifies half of the files; the damaged one is in one rank's share only
    run = rewound(base_run, tmp_path)
    _flip(run / "checkpoints" / "iter_0000008" / "__0_1.distcp")
    proc = run_trainer(*tiny_args(run, tiny_corpus, KEEP, steps=STEPS), nproc=2, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "__0_1.distcp: SHA-256 differs from the manifest" in proc.stderr
    assert "resuming from iter_0000004" in proc.stderr
    assert (run / "checkpoints" / "iter_0000008.corrupt").is_dir()
    files = cf.read_manifest(run / "checkpoints" / "iter_0000012")  # written by two ranks' hashes
    assert {"ranks/rank_00000.json", "ranks/rank_00001.json"} <= set(files)
    assert ckpt.verify_checkpoint(run / "checkpoints" / "iter_0000012")["world_size"] == 2


def test_export_of_a_damaged_checkpoint_is_refused(base_run, tmp_path):
    run = rewound(base_run, tmp_path)
    _flip(run / "checkpoints" / "iter_0000008" / "__0_0.distcp")
    proc = run_trainer("export-hf", str(run / "checkpoints" / "iter_0000008"), str(tmp_path / "hf"), check=False)
    assert proc.returncode == 2
    assert "trainer export-hf:" in proc.stderr and "__0_0.distcp: SHA-256 differs from the manifest" in proc.stderr
    assert not (tmp_path / "hf").exists()


def test_no_usable_checkpoint_stops_instead_of_starting_over(base_run, tiny_corpus, tmp_path):
    run = rewound(base_run, tmp_path)
    _flip(run / "checkpoints" / "iter_0000008" / "__0_0.distcp")
    (run / "checkpoints" / "iter_0000004" / "trainer_state.json").write_text('{"step": 4, "tok')
    before = (run / "metrics.jsonl").read_bytes()
    proc = resume(run, tiny_corpus)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no usable checkpoint (iter_0000008, iter_0000004 failed verification" in proc.stderr
    assert "trainer_state.json: 16 bytes, the manifest says" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "iter_0000004.corrupt",
        "iter_0000008.corrupt",
        "latest",
    ]
    assert (run / "metrics.jsonl").read_bytes() == before  # nothing trained from scratch


# ----------------------------------------------------------------------------------------------
# Hostile files: refused before anything runs, and the run stops
# ----------------------------------------------------------------------------------------------


def _hostile_metadata(ckpt_dir: Path, marker: Path) -> str:
    (ckpt_dir / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    return "refusing to build posix.system"


def _hostile_common(ckpt_dir: Path, marker: Path) -> str:
    torch.save({"optimizer": _RunsCode(marker)}, ckpt_dir / "common.pt")
    return "common.pt: weights-only reader refused it"


def _hostile_rank_file(ckpt_dir: Path, marker: Path) -> str:
    # the layout of checkpoints written before rank state was JSON, with a payload
    (ckpt_dir / "ranks" / "rank_00000.json").unlink()
    torch.save({"rng": _RunsCode(marker), "data": None}, ckpt_dir / "ranks" / "rank_00000.pt")
    return "rank_00000.pt: weights-only reader refused it"


@pytest.mark.parametrize(
    "plant", [_hostile_metadata, _hostile_common, _hostile_rank_file], ids=["metadata", "common", "rank"]
)
def test_hostile_file_is_refused_without_running_it(plant, base_run, tmp_path):
    run = rewound(base_run, tmp_path)
    ckpt_dir = run / "checkpoints" / "iter_0000008"
    marker = tmp_path / "code-ran"
    expected = plant(ckpt_dir, marker)
    regenerate_manifest(ckpt_dir)
    with pytest.raises(cf.UnsafeCheckpointError, match="refus") as e:
        if plant is _hostile_rank_file:  # rank files are read when the state is loaded
            ckpt._rank_state(ckpt_dir, 0)
        else:
            ckpt.verify_checkpoint(ckpt_dir)
    assert expected in str(e.value)
    assert not marker.exists()


def test_hostile_metadata_stops_the_resume(base_run, tiny_corpus, tmp_path):
    run = rewound(base_run, tmp_path)
    ckpt_dir = run / "checkpoints" / "iter_0000008"
    marker = tmp_path / "code-ran"
    _hostile_metadata(ckpt_dir, marker)
    regenerate_manifest(ckpt_dir)
    proc = resume(run, tiny_corpus)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "refusing to load" in proc.stderr and "refusing to build posix.system" in proc.stderr
    assert "the run stops instead of falling back" in proc.stderr
    assert not marker.exists()
    assert ckpt_dir.is_dir()  # left where it is, for whoever investigates


def test_checkpoint_of_an_earlier_version_resumes_with_a_warning(base_run, tiny_corpus, tmp_path):
    # the layout before checksums and JSON rank state: no manifest, ranks/rank_00000.pt (numpy RNG arrays)
    run = rewound(base_run, tmp_path)
    ckpt_dir = run / "checkpoints" / "iter_0000008"
    rng, data = cf.read_rank_state(cf.rank_state_file(ckpt_dir, 0))
    (ckpt_dir / "manifest.json").unlink()
    cf.rank_state_file(ckpt_dir, 0).unlink()
    torch.save({"rng": rng, "data": data}, ckpt_dir / "ranks" / "rank_00000.pt")
    proc = resume(run, tiny_corpus)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "has no checksum manifest (written by an earlier version): not verified" in proc.stderr
    for step in (9, 12):
        assert record(run, step)["loss"] == record(base_run, step)["loss"]


def test_every_pickle_of_a_real_checkpoint_passes_the_safe_readers(base_run):
    for ckpt_dir in ckpt.list_checkpoints(base_run / "checkpoints"):
        state = ckpt.verify_checkpoint(ckpt_dir)
        assert state["step"] in (4, 8, 12)
        files = cf.read_manifest(ckpt_dir)
        assert set(files) == set(cf.checkpoint_files(ckpt_dir))
        assert {".metadata", "common.pt", "trainer_state.json", "ranks/rank_00000.json"} <= set(files)
        assert not list(ckpt_dir.rglob("*.pt")) or [p.name for p in ckpt_dir.rglob("*.pt")] == ["common.pt"]


# ----------------------------------------------------------------------------------------------
# latest
# ----------------------------------------------------------------------------------------------


def test_latest_may_only_name_a_checkpoint_of_this_run(base_run, tiny_corpus, tmp_path):
    other = rewound(base_run, tmp_path, "other")
    shutil.copytree(other / "checkpoints" / "iter_0000008", other / "checkpoints" / "iter_0000060")
    run = rewound(base_run, tmp_path)
    latest = run / "checkpoints" / "latest"
    for content in (b"../../other/checkpoints/iter_0000060\n", os.urandom(64) + b"\xff\xfe"):
        latest.write_bytes(content)
        assert ckpt.find_latest(run / "checkpoints") == run / "checkpoints" / "iter_0000008"
    latest.write_bytes(b"../../other/checkpoints/iter_0000060\n")
    proc = resume(run, tiny_corpus)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not the name of a checkpoint folder beside it" in proc.stderr
    assert "resumed from" in proc.stderr and "iter_0000008 at step 8" in proc.stderr
    assert record(run, 12)["loss"] == record(base_run, 12)["loss"]


# ----------------------------------------------------------------------------------------------
# Resume and config
# ----------------------------------------------------------------------------------------------

OTHER_CURRICULUM = "data.curriculum={phases: [{start: 0.0, weights: {raw: 1.0}}, {start: 0.5, weights: {raw: 0.5, rephrased: 0.2, refusal: 0.1, moral: 0.1, tagged: 0.1}}]}"  # noqa: E501


def test_changed_curriculum_is_refused_unless_allowed_and_then_recorded(base_run, tiny_corpus, tmp_path):
    run = rewound(base_run, tmp_path)
    config_before = (run / "config.yaml").read_text()
    proc = resume(run, tiny_corpus, OTHER_CURRICULUM)
    assert proc.returncode != 0
    err = proc.stderr
    assert "data.curriculum changed (which bucket each past step drew from)" in err
    assert "data.curriculum.phases" in err and "0.25" in err and "0.5" in err
    assert "resume.allow_changed=[data.curriculum]" in err
    assert (run / "config.yaml").read_text() == config_before  # the refused start recorded nothing
    assert not (run / "checkpoints" / "iter_0000012").exists()

    proc = resume(run, tiny_corpus, OTHER_CURRICULUM, "resume.allow_changed=[data.curriculum]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resume.allow_changed: data.curriculum changed at step 8" in proc.stderr
    seg = json.loads((run / "segments.jsonl").read_text().splitlines()[-1])
    assert seg["from_checkpoint"] == "iter_0000008"
    assert seg["allowed"]["data.curriculum"]["before"]["phases"][1]["start"] == 0.25
    assert seg["allowed"]["data.curriculum"]["after"]["phases"][1]["start"] == 0.5
    # the new curriculum's checkpoints record it: resuming again with it needs no override
    state = json.loads((run / "checkpoints" / "iter_0000012" / "trainer_state.json").read_text())
    assert state["fixed"]["data.curriculum"]["phases"][1]["start"] == 0.5


def test_changed_seed_and_model_shape_are_refused_with_both_values(base_run, tiny_corpus, tmp_path):
    run = rewound(base_run, tmp_path)
    proc = resume(run, tiny_corpus, "data.seed=7", "model.hidden_size=96")
    assert proc.returncode != 0
    assert "data.seed changed" in proc.stderr and "data.seed: 1234 in the checkpoint, 7 now" in proc.stderr
    assert "model.architecture.hidden_size: 64 in the checkpoint, 96 now" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.returncode == 2


def test_new_learning_rate_is_applied_and_recorded(base_run, tiny_corpus, tmp_path):
    run = rewound(base_run, tmp_path)
    proc = resume(run, tiny_corpus, "train.lr=1.0e-2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resume: train.lr changed 0.003 -> 0.01 (applied)" in proc.stderr
    fresh = tmp_path / "fresh"
    run_trainer(*tiny_args(fresh, tiny_corpus, KEEP, "train.lr=1.0e-2", steps=STEPS))
    for step in (9, 10, 11):  # the schedule of a run that had lr 1e-2 from the start (12 ends at min_lr)
        assert record(run, step)["lr"] == pytest.approx(record(fresh, step)["lr"], rel=1e-12)
        assert record(run, step)["lr"] != record(base_run, step)["lr"]
    assert "lr: 0.01" in (run / "config.yaml").read_text()
    seg = json.loads((run / "segments.jsonl").read_text().splitlines()[-1])
    assert seg["changed"]["train.lr"] == {"before": 0.003, "after": 0.01}


def test_init_hf_with_another_tokenizer_is_refused(reference_hf, tiny_corpus, tmp_path):
    from datagen.tokenizer_train import train_bpe_tokenizer

    hf = tmp_path / "hf"
    shutil.copytree(reference_hf, hf)
    for f in hf.glob("*token*"):
        f.unlink()
    other = train_bpe_tokenizer(
        ["a different corpus entirely, with other merges"] * 50, tmp_path / "tok", vocab_size=300
    )
    for f in other.iterdir():
        shutil.copy(f, hf / f.name)
    proc = run_trainer(*tiny_args(tmp_path / "run", tiny_corpus, f"init.hf={hf}", steps=4), check=False)
    assert proc.returncode != 0
    assert f"init.hf={hf}: its tokenizer" in proc.stderr
    assert f"is not the tokenizer of data.corpus={tiny_corpus}" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_as_a_library_from_a_script_without_a_main_guard(tiny_corpus, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "my_training.py"
    args = tiny_args(tmp_path / "run", tiny_corpus, steps=4)[3:]  # the overrides after "train --config X"
    script.write_text(
        "from infra.config import load_config\n"
        "from trainer.config import TrainerConfig\n"
        "from trainer.train import train\n"
        f"print('script body', flush=True)\n"
        f"cfg = load_config(TrainerConfig, 'configs/trainer/tiny.yaml', {args!r})\n"
        "print(train(cfg)['step'])\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=REPO_ROOT, env=trainer_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["script", "body", "4"]  # the body ran once; checkpoints were written
    assert (tmp_path / "run" / "checkpoints" / "iter_0000004" / "manifest.json").is_file()
