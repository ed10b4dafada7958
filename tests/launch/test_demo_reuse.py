"""The demo driver's step reuse: a step is skipped only while its command, its config folder and the
step before it are unchanged."""

from infra.marker import Marker
from launch import demo


def test_step_parts_follow_config_and_previous_step(tmp_path, monkeypatch):
    cfg = tmp_path / "configs" / "x"
    cfg.mkdir(parents=True)
    (cfg / "base.yaml").write_text("a: 1\n")
    (cfg / "run.yaml").write_text("base: base.yaml\nb: 2\n")
    monkeypatch.setattr(demo, "REPO_ROOT", tmp_path)
    cmd = ["python", "-m", "pkg", "run", "--config", "configs/x/run.yaml", "out=o"]
    parts = demo.step_parts(cmd, "")
    assert parts == demo.step_parts(["/other/python"] + cmd[1:], "")  # the interpreter path does not count
    m = Marker(tmp_path, "step")
    m.write(parts)
    assert m.check(parts)
    assert m.check(demo.step_parts(cmd, "previous-step-changed")).reason.endswith("previous")
    assert m.check(demo.step_parts(cmd[:-1] + ["out=p"], "")).reason.endswith("command")
    (cfg / "base.yaml").write_text("a: 2\n")  # a base config changed
    assert m.check(demo.step_parts(cmd, "")).reason.endswith("configs")
