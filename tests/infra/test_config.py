"""The shared config language: YAML -> dataclasses, overrides, validation errors."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from infra.config import ConfigError, load_config, parse_overrides, save_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])


@dataclass
class Phase:
    start: float
    weights: dict[str, float]


@dataclass
class Cfg:
    name: str = "run"
    steps: int = 10
    schedule: Literal["cosine", "wsd"] = "cosine"
    bf16: bool = False
    out: str | None = None
    optim: Optim = field(default_factory=Optim)
    phases: list[Phase] = field(default_factory=list)

    def validate(self):
        if self.steps <= 0:
            raise ConfigError(f"key 'steps': must be positive, got {self.steps}")


def test_yaml_overrides_and_nested(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: a\noptim:\n  lr: 3e-4\nphases:\n  - {start: 0.0, weights: {raw: 1}}\n")
    cfg = load_config(Cfg, p, ["steps=5", "optim.betas=[0.8, 0.9]", "schedule=wsd", "bf16=true"])
    assert cfg.name == "a" and cfg.steps == 5 and cfg.schedule == "wsd" and cfg.bf16 is True
    assert cfg.optim.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string; converted
    assert cfg.optim.betas == [0.8, 0.9]
    assert cfg.phases[0].weights == {"raw": 1.0} and isinstance(cfg.phases[0], Phase)


def test_base_inheritance_and_roundtrip(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nsteps: 7\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nname: child\n")
    cfg = load_config(Cfg, tmp_path / "child.yaml")
    assert (cfg.name, cfg.steps) == ("child", 7)
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Cfg, tmp_path / "resolved.yaml")
    assert to_dict(again) == to_dict(cfg)


@pytest.mark.parametrize(
    "text,override,needle",
    [
        ("nmae: x\n", None, "unknown key 'nmae'"),
        ("optim:\n  lrr: 1\n", None, "unknown key 'optim.lrr'"),
        ("steps: many\n", None, "key 'steps'"),
        ("bf16: 3\n", None, "expected bool"),
        ("schedule: linear\n", None, "expected one of"),
        ("", "steps=0", "must be positive"),
        ("phases:\n  - {weights: {raw: 1}}\n", None, "missing required key 'phases[0].start'"),
    ],
)
def test_errors_name_key_and_file(tmp_path, text, override, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, p, [override] if override else None)
    assert needle in str(e.value)
    assert "bad.yaml" in str(e.value)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, "/nonexistent/c.yaml")


def test_a_shipped_curriculum_is_found_outside_a_checkout(tmp_path, monkeypatch):
    """The shipped trainer configs name ``configs/trainer/curricula/...``; installed (no checkout to be
    relative to) the name resolves through the shipped configs, as ``--config`` names do."""
    import infra.curriculum as C

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(C, "REPO_ROOT", tmp_path / "no-checkout")
    for name in ("configs/trainer/curricula/intervention_20.yaml", "trainer/curricula/intervention_20"):
        cur = C.resolve_curriculum(name)
        assert len(cur.phases) == 2
    with pytest.raises(ConfigError, match="curriculum file not found: trainer/curricula/nope"):
        C.resolve_curriculum("trainer/curricula/nope")
