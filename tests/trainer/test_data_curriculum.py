"""Curriculum configs and the exact mixing schedule (no corpus needed)."""

import random
from pathlib import Path

import pytest

from infra.config import ConfigError
from trainer.data.curriculum import CurriculumConfig, MixScheduler, Phase, load_curriculum, plan_counts

CURRICULA = Path(__file__).resolve().parents[2] / "configs" / "trainer" / "curricula"
INTERVENTION = {"raw": 0.70, "rephrased": 0.15, "refusal": 0.05, "moral": 0.05, "tagged": 0.05}


def share(phases, bucket, samples, total):
    """Scheduled samples of ``bucket`` among the first ``samples`` (integral of piecewise weights)."""
    acc = 0.0
    for i, p in enumerate(phases):
        s = p.start * total
        e = phases[i + 1].start * total if i + 1 < len(phases) else float("inf")
        if samples > s:
            acc += p.weights.get(bucket, 0.0) * (min(samples, e) - s)
    return acc


@pytest.mark.parametrize(
    "name,switch",
    [
        ("intervention_0", 0.0),
        ("intervention_20", 0.2),
        ("intervention_60", 0.6),
        ("aligned_last10", 0.9),
        ("raw_only", None),
    ],
)
def test_shipped_curricula_load(name, switch):
    cur = load_curriculum(CURRICULA / f"{name}.yaml")
    cur.validate()
    starts = [p.start for p in cur.phases]
    assert starts[0] == 0.0
    if switch:
        assert starts == [0.0, switch] and cur.phases[0].weights == {"raw": 1.0}
    if name.startswith("intervention"):
        assert cur.phases[-1].weights == INTERVENTION


def test_load_curriculum_plain_form_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("phases:\n  - start: 0.0\n    weights: {raw: 1.0}\n")
    assert load_curriculum(f).phases[0].weights == {"raw": 1.0}
    g = tmp_path / "child.yaml"
    g.write_text(f"base: {CURRICULA / 'intervention_20.yaml'}\n")
    cur = load_curriculum(g, ["curriculum.extra_buckets=[web2]"])
    assert cur.extra_buckets == ["web2"] and cur.phases[1].start == 0.2


@pytest.mark.parametrize(
    "phases,match",
    [
        ([], "empty"),
        ([Phase(0.1, {"raw": 1.0})], r"phases\[0\].*must start at 0.0"),
        (
            [Phase(0.0, {"raw": 1.0}), Phase(0.5, {"raw": 0.5}), Phase(0.7, {"raw": 1.0})],
            r"phases\[1\] \(start=0.5\): weights must sum to 1",
        ),
        ([Phase(0.0, {"raw": 1.2, "moral": -0.2})], r"phases\[0\].*'moral' must be >= 0"),
        (
            [Phase(0.0, {"raw": 1.0}), Phase(0.3, {"raw": 1.0}), Phase(0.3, {"raw": 1.0})],
            r"phases\[2\].*increase strictly",
        ),
        ([Phase(0.0, {"raw": 1.0}), Phase(1.0, {"raw": 1.0})], r"phases\[1\].*\[0, 1\)"),
        ([Phase(0.0, {"raw": 0.5, "refusals": 0.5})], r"phases\[0\].*unknown bucket 'refusals'"),
        ([Phase(0.0, {})], r"phases\[0\].*empty"),
    ],
)
def test_validation_errors_name_the_phase(phases, match):
    with pytest.raises(ConfigError, match=match):
        CurriculumConfig(phases).validate()


def test_validation_error_from_yaml_names_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("curriculum:\n  phases:\n    - start: 0.0\n      weights: {raw: 0.6, tagged: 0.3}\n")
    with pytest.raises(ConfigError, match=r"phases\[0\].*sum to 0.9.*bad.yaml"):
        load_curriculum(f)
    f.write_text("curriculum:\n  phases:\n    - start: 0.0\n      weigths: {raw: 1.0}\n")
    with pytest.raises(ConfigError, match="unknown key.*weigths"):
        load_curriculum(f)


def test_extra_buckets_allow_added_names():
    CurriculumConfig([Phase(0.0, {"raw": 0.5, "web2": 0.5})], extra_buckets=["web2"]).validate()


def test_plan_exact_across_phase_switch():
    cur = load_curriculum(CURRICULA / "intervention_20.yaml")
    steps, bsz = 25, 16
    plan = plan_counts(cur, steps, bsz)
    total = steps * bsz
    cum = dict.fromkeys(INTERVENTION, 0)
    for g, counts in enumerate(plan):
        assert sum(counts.values()) == bsz and min(counts.values()) >= 0
        if g < 5:  # 20% of 25 steps: the first five batches are raw only
            assert counts["raw"] == bsz
        for b in cum:
            cum[b] += counts[b]
            assert abs(cum[b] - share(cur.phases, b, (g + 1) * bsz, total)) <= 1.0, (g, b)
    assert any(plan[5][b] for b in INTERVENTION if b != "raw")  # the switch happens inside the run


def test_switch_inside_a_batch_splits_it():
    cur = CurriculumConfig([Phase(0.0, {"raw": 1.0}), Phase(0.55, {"raw": 0.5, "tagged": 0.5})])
    plan = plan_counts(cur, 10, 10)  # boundary at sample 55: batch 5 is half-and-half phase
    assert plan[4] == {"raw": 10, "tagged": 0}
    assert plan[5]["tagged"] in (2, 3)
    assert sum(p["tagged"] for p in plan) == 22  # 0.5 * 45


def test_bound_holds_for_random_curricula():
    rng = random.Random(1)
    names = ["raw", "tagged", "rephrased", "refusal", "moral", "aligned"]
    worst = 0.0
    for _ in range(60):
        bs = names[: rng.randint(2, 6)]
        starts = sorted({0.0, *(round(rng.random(), 3) for _ in range(rng.randint(0, 3)))})
        phases = []
        for s in starts:
            ws = [rng.choice([0.0, rng.random(), 0.02 * rng.random()]) for _ in bs]
            ws[0] += 1e-3
            t = sum(ws)
            phases.append(Phase(s, {b: w / t for b, w in zip(bs, ws)}))
        cur = CurriculumConfig(phases)
        steps, bsz = rng.randint(1, 30), rng.randint(1, 40)
        sched = MixScheduler(cur, steps, bsz)
        cum = dict.fromkeys(sched.buckets, 0)
        for g, counts in enumerate(plan_counts(cur, steps, bsz)):
            assert min(counts.values()) >= 0 and sum(counts.values()) == bsz
            for b in cum:
                cum[b] += counts[b]
                dev = abs(cum[b] - share(phases, b, (g + 1) * bsz, steps * bsz))
                worst = max(worst, dev)
                assert dev <= 1 - sched.eps + 1e-6, (phases, steps, bsz, g, b, dev)
    assert worst > 0.3  # the test did exercise fractional shares


def test_scheduler_rejects_inconsistent_state():
    sched = MixScheduler(load_curriculum(CURRICULA / "intervention_0.yaml"), 4, 8)
    with pytest.raises(ValueError, match="inconsistent"):
        sched.counts({"raw": 3}, 1)
