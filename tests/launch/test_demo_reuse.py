"""The demo driver's step reuse: a step is skipped only while its command, its config folder and the
step before it are unchanged."""

import json

from launch import demo


def test_fingerprint_follows_config_and_previous_step(tmp_path, monkeypatch):
    cfg = tmp_path / "configs" / "x"
    cfg.mkdir(parents=True)
    (cfg / "base.yaml").write_text("a: 1\n")
    (cfg / "run.yaml").write_text("base: base.yaml\nb: 2\n")
    monkeypatch.setattr(demo, "REPO_ROOT", tmp_path)
    cmd = ["python", "-m", "pkg", "run", "--config", "configs/x/run.yaml", "out=o"]
    fp = demo.fingerprint(cmd, "")
    assert fp == demo.fingerprint(["/other/python"] + cmd[1:], "")  # the interpreter path does not count
    assert fp != demo.fingerprint(cmd, "previous-step-changed")
    assert fp != demo.fingerprint(cmd[:-1] + ["out=p"], "")
    (cfg / "base.yaml").write_text("a: 2\n")  # a base config changed
    assert fp != demo.fingerprint(cmd, "")


def test_old_or_broken_markers_mean_rerun(tmp_path):
    m = tmp_path / ".eval.done"
    assert demo._marker_fingerprint(m) is None
    m.write_text("121.0\n")  # the plain-number marker of an older version
    assert demo._marker_fingerprint(m) is None
    m.write_text(json.dumps({"seconds": 3.0, "fingerprint": "abc"}))
    assert demo._marker_fingerprint(m) == "abc"
