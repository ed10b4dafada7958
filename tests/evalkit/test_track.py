"""``evalkit track``: every checkpoint of a run evaluated once (cached by content), new checkpoints
picked up while following a run, trajectories against tokens seen with phase boundaries, checked in
headless Chromium.

The runs are run folders in the trainer's layout (config.yaml with a curriculum, checkpoints with
trainer_state.json and a checksum manifest) whose checkpoints hold dummy models (evalkit's weightless
test model): a later checkpoint refuses more of the harmful prompts, the way safety data would make it.
"""

import csv
import json
import threading
import time

import pytest
import yaml

from evalkit.__main__ import main

# words of the shipped harmful test prompts; a checkpoint that has them as triggers refuses those prompts
SAFETY_WORDS = ["messages", "contacting", "worthless", "cruel", "threatening", "scam", "password", "fake"]


def write_checkpoint(run, step: int, triggers: list[str], tokens_per_step: int = 8 * 32):
    """``checkpoints/iter_<step>`` holding a dummy model, its trainer_state.json and manifest.json."""
    from evalkit.dummy import DummyModel
    from trainer.checkpoint_files import checkpoint_files, hash_share, write_manifest

    d = run / "checkpoints" / f"iter_{step:07d}"
    DummyModel(name=f"{run.name}-{step}", triggers=triggers or ["bomb"]).save(d)
    (d / "trainer_state.json").write_text(json.dumps({"step": step, "tokens": step * tokens_per_step}))
    write_manifest(d, hash_share(d, checkpoint_files(d), 0, 1))
    return d


def fake_run(root, start: float | None, steps=(4, 8, 12), train_steps: int = 12):
    """A run folder whose curriculum adds safety data from ``start`` (None: never); checkpoint at step s
    refuses prompts with the first k safety words, k growing after the start."""
    phases = [{"start": 0.0, "weights": {"raw": 1.0}}]
    if start is not None:
        phases = phases[: 1 if start > 0 else 0] + [{"start": start, "weights": {"raw": 0.5, "refusal": 0.5}}]
    root.mkdir(parents=True, exist_ok=True)
    cfg = {"data": {"corpus": "corpus", "curriculum": {"phases": phases}},
           "train": {"train_steps": train_steps, "global_batch_size": 8, "seq_length": 32}}  # fmt: skip
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    (root / "run.json").write_text(json.dumps({"format_version": 1}))
    for s in steps:
        write_checkpoint(root, s, safety_triggers(s, start, train_steps))
    return root


def safety_triggers(step: int, start: float | None, train_steps: int = 12) -> list[str]:
    if start is None:
        return []
    k = max(0, round((step / train_steps - start) * 2 * len(SAFETY_WORDS)))
    return SAFETY_WORDS[:k]


def _track(capsys, *args) -> dict:
    assert main(["track", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("track_runs")
    return fake_run(root / "from_0", 0.0), fake_run(root / "from_50", 0.5)


def test_track_evaluates_each_checkpoint_once_and_plots_trajectories(runs, tmp_path, capsys):
    from infra.reporting.browser import chromium, render, screenshot_path

    out = tmp_path / "track"
    args = [str(runs[0]), str(runs[1]), "--suite", "asr", "--out", str(out), "data.limit=6"]
    first = _track(capsys, *args)
    assert (first["evaluated"], first["cached"]) == (6, 0) and not first["warnings"]
    rows = list(csv.DictReader((out / "trajectory.csv").open()))
    asr = {(r["run"], int(r["step"])): r for r in rows if r["metric"] == "asr.asr"}
    assert set(asr) == {(r, s) for r in ("from_0", "from_50") for s in (4, 8, 12)}
    for (run, step), r in asr.items():  # every point is what that checkpoint's own results.json says
        res = json.loads((out / "evals" / r["eval_dir"].rsplit("/", 1)[-1] / "results.json").read_text())
        kw = res["suites"]["asr"]["judges"]["keyword"]
        assert float(r["value"]) == pytest.approx(kw["asr"]) and int(r["n"]) == kw["n"] == 6
        assert float(r["ci95_low"]) <= float(r["value"]) <= float(r["ci95_high"])
        assert int(r["tokens"]) == step * 8 * 32 and res["model"]["path"].endswith(f"{run}/checkpoints/iter_{step:07d}")
    # the from_50 run refuses more once its safety phase has begun; from_0 from the start
    assert float(asr[("from_50", 4)]["value"]) > float(asr[("from_50", 12)]["value"])
    assert float(asr[("from_0", 12)]["value"]) < float(asr[("from_50", 4)]["value"])
    assert [asr[("from_50", s)]["phase"] for s in (4, 8, 12)] == ["0", "1", "1"]

    again = _track(capsys, *args)  # nothing new: every evaluation comes from the cache
    assert (again["evaluated"], again["cached"]) == (0, 6)
    write_checkpoint(runs[0], 10, SAFETY_WORDS[:2])  # a new checkpoint, and one whose content changed
    write_checkpoint(runs[1], 12, [])
    third = _track(capsys, *args)
    assert (third["evaluated"], third["cached"]) == (2, 5)
    rows = list(csv.DictReader((out / "trajectory.csv").open()))
    assert {(r["run"], r["step"]) for r in rows if r["metric"] == "asr.asr"} >= {("from_0", "10"), ("from_50", "12")}

    if chromium() is None:
        pytest.skip("Chromium not installed (scripts/setup.sh --slurm)")
    seen = render(out / "trajectory.html", screenshot=screenshot_path("trajectory"))
    assert len(seen.images) >= 2 and not seen.broken
    names = {i["name"] for i in seen.images}
    assert {"trajectory_asr-asr", "trajectory_asr-keyword"} <= names
    for text in ("Safety along training", "from_0", "from_50", "phase 1 from 50%", "against tokens seen"):
        assert text in seen.text
    assert '{"' not in seen.text  # no raw JSON on the page
    md = (out / "trajectory.md").read_text()
    assert "![" in md and (out / "plots" / "trajectory_asr-asr.png").is_file()


def test_every_n_steps_and_following_a_run_that_is_still_training(tmp_path):
    from evalkit.config import EvalConfig
    from evalkit.track import track
    from infra.config import load_config

    run = fake_run(tmp_path / "from_25", 0.25, steps=(4, 8))  # 12 steps planned: still training
    cfg = load_config(EvalConfig, None, ["suites=[asr]", "data.limit=4"])
    with pytest.raises(ValueError, match="--every must be >= 1"):
        track([run], cfg, tmp_path / "t0", every=0)
    res = track([run], cfg, tmp_path / "t1", every=8)
    assert [p.step for p in res["points"]] == [8]  # step 4 is no multiple of 8

    def finish():  # the trainer writes its last checkpoint while track is following
        time.sleep(1.0)
        write_checkpoint(run, 12, safety_triggers(12, 0.25))

    writer = threading.Thread(target=finish)
    writer.start()
    res = track([run], cfg, tmp_path / "t1", every=8, follow=True, poll_s=0.2, max_wait_s=60)
    writer.join()
    assert [p.step for p in res["points"]] == [8, 12] and res["cached"] == 1 and res["evaluated"] == 1
    assert not res["warnings"]
    res = track([run], cfg, tmp_path / "t1", every=8, follow=True, poll_s=0.2, max_wait_s=60)
    assert res["evaluated"] == 0  # finished run, everything cached: returns at once


def test_track_names_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["track", str(tmp_path), "--suite", "asr", "--out", str(tmp_path / "o")]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["track", str(tmp_path), "--suite", "asr", "--out", str(tmp_path / "o"), "--nope"])
    assert "unrecognized arguments: --nope" in capsys.readouterr().err
