"""The shared folder schemas, completion markers, package-CLI runner, registry and curriculum schema."""

from __future__ import annotations

import json
import os

import pytest

from infra.config import ConfigError, load_config
from infra.curriculum import CurriculumConfig, curriculum_yaml, load_curriculum, resolve_curriculum, with_intervention
from infra.folders import FolderError, ResultsFolder, RunFolder, code_version
from infra.marker import Marker, path_fingerprint, value_fingerprint
from infra.proc import CLIError, run_cli
from infra.registry import Registry, RegistryError


def test_code_version_names_this_checkout():
    v = code_version()
    assert v["package"] == "safety-pretraining" and v["version"]
    if os.path.dirname(__file__) and os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", ".git")):
        assert len(v["git_sha"]) == 40 and isinstance(v["git_dirty"], bool)


def test_results_folder_records_versions_and_refuses_newer_formats(tmp_path):
    rf = ResultsFolder(tmp_path / "res")
    written = rf.write_results({"suites": {"asr": {"asr": 0.5}}, "format_version": 99})
    assert written["format_version"] == 1 and written["code_version"] == code_version()
    assert rf.read_results()["suites"] == {"asr": {"asr": 0.5}}
    rf.results.write_text(json.dumps({"format_version": 2}))
    with pytest.raises(FolderError, match="format_version 2"):
        rf.read_results()
    rf.results.write_text("{not json")
    with pytest.raises(FolderError, match="results.json: not valid JSON"):
        rf.read_results()
    run = RunFolder(tmp_path / "run")
    run.write_info(mode="sft")
    assert run.read_info()["mode"] == "sft" and run.read_info()["format_version"] == 1


def test_marker_names_the_changed_part_and_reuse_clears_stale_output(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"a": 1}\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.bin").write_text("weights")
    m = Marker(out, "step")
    parts = {"data": path_fingerprint(data), "config": value_fingerprint({"lr": 1e-3})}
    assert m.check(parts).reason == "no completion marker"
    m.write(parts, seconds=1.0)
    assert m.check(parts, outputs=[out / "model.bin"])
    # the marker itself does not change the folder's fingerprint
    assert path_fingerprint(out) == path_fingerprint(out) and ".step.done.json" in os.listdir(out)
    data.write_text('{"a": 2}\n')
    changed = {"data": path_fingerprint(data), "config": parts["config"]}
    assert m.check(changed).reason == "changed since the last run: data"
    assert m.check(parts, outputs=[out / "missing.bin"]).reason.startswith("output missing")
    assert not m.reuse(parts, stale=out, allowed=False) and not out.exists()
    out.mkdir()
    (out / ".step.done.json").write_text("garbage")
    assert "unreadable" in m.check(parts).reason


def test_path_fingerprints_content_and_metadata(tmp_path):
    from infra.corpus import file_sha256

    f = tmp_path / "a.txt"
    f.write_text("x")
    assert path_fingerprint(f) == file_sha256(f)
    assert path_fingerprint(tmp_path / "nope") == "missing"
    before, meta_before = path_fingerprint(tmp_path), path_fingerprint(tmp_path, content=False)
    os.utime(f, ns=(1, 1))  # same bytes, another modification time
    assert path_fingerprint(tmp_path) == before and path_fingerprint(tmp_path, content=False) != meta_before


def test_run_cli_cleans_the_distributed_environment_and_reports_failures(tmp_path, monkeypatch):
    (tmp_path / "envdump.py").write_text(
        "import json, os, sys\nprint(json.dumps(dict(os.environ)))\nsys.exit(int(sys.argv[1]))\n"
    )
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(30)\n")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("MASTER_PORT", "29500")
    log = tmp_path / "logs" / "ok.log"
    run_cli("envdump", ["0"], log_path=log, cwd=tmp_path)
    env = json.loads(log.read_text())
    assert "RANK" not in env and "MASTER_PORT" not in env and env["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(CLIError, match=r"dump: exit status 7 \(log: .*bad.log\)") as e:
        run_cli("envdump", ["7"], log_path=tmp_path / "bad.log", cwd=tmp_path, what="dump")
    assert e.value.returncode == 7 and "PYTHONPATH" in str(e.value)  # the log's tail is in the message
    with pytest.raises(CLIError, match="no result within 1 s"):
        run_cli("sleeper", [], log_path=tmp_path / "slow.log", cwd=tmp_path, timeout_s=1)


def test_registry_rejects_twins_and_lists_known_names():
    reg = Registry("thing", allow_import=True)
    reg.register("a", 1)

    @reg.register("b")
    def b():
        return 2

    assert reg.names() == ["a", "b"] and reg.get("b") is b and "os.path:join" in reg
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a", 3)
    with pytest.raises(RegistryError, match=r"unknown thing 'c' \(known: a, b or 'module:Class'\)"):
        reg.get("c")
    assert reg.get("os.path:join") is os.path.join
    with pytest.raises(RegistryError, match="cannot import"):
        reg.get("no_such_module_xyz:Thing")


def test_with_intervention_builds_each_condition():
    base, inter = {"raw": 1.0}, {"raw": 0.8, "refusal": 0.2, "unsafe": 0.0}
    none = with_intervention(base, inter, None)
    assert [(p.start, p.weights) for p in none.phases] == [(0.0, {"raw": 1.0})]
    zero = with_intervention(base, inter, 0.0)
    assert [(p.start, p.weights) for p in zero.phases] == [(0.0, {"raw": 0.8, "refusal": 0.2})]
    late = with_intervention(base, {"raw": 0.5, "extra": 0.5}, 0.6)
    assert [p.start for p in late.phases] == [0.0, 0.6] and late.extra_buckets == ["extra"]
    like = CurriculumConfig(phases=none.phases, max_epochs=3.0)
    assert with_intervention(base, inter, 0.2, like=like).max_epochs == 3.0 and like.phases == none.phases
    with pytest.raises(ConfigError, match="must sum to 1"):
        with_intervention(base, {"raw": 0.5}, 0.2)


def test_curriculum_file_round_trip_and_typed_trainer_config(tmp_path):
    from trainer.config import TrainerConfig

    cur = with_intervention({"raw": 1.0}, {"raw": 0.9, "moral": 0.1}, 0.2)
    p = tmp_path / "c.yaml"
    p.write_text(curriculum_yaml(cur, "intervention from 20%"))
    assert p.read_text().startswith("# intervention from 20%\n")
    assert load_curriculum(p) == cur == resolve_curriculum(str(p))
    ok = load_config(
        TrainerConfig, None, ["data.corpus=x", "data.curriculum={phases: [{start: 0.0, weights: {raw: 1.0}}]}"]
    )
    assert isinstance(ok.data.curriculum, CurriculumConfig)
    # an inline curriculum is validated when the config loads, with the schema's own message
    with pytest.raises(ConfigError, match="weights must sum to 1"):
        load_config(
            TrainerConfig, None, ["data.corpus=x", "data.curriculum={phases: [{start: 0.0, weights: {raw: 0.5}}]}"]
        )
    with pytest.raises(ConfigError, match="curriculum file not found"):
        load_config(TrainerConfig, None, ["data.corpus=x", f"data.curriculum={tmp_path}/missing.yaml"])
    with pytest.raises(ConfigError, match="max_epochs: must be > 0"):
        CurriculumConfig(phases=cur.phases, max_epochs=0).validate()
    with pytest.raises(ConfigError, match="bucket_max_epochs: unknown bucket 'rwa'"):
        CurriculumConfig(phases=cur.phases, bucket_max_epochs={"rwa": 2}).validate()
    assert CurriculumConfig(phases=cur.phases, max_epochs=2, bucket_max_epochs={"raw": 5}).epoch_limit("raw") == 5
