"""Suites and judges come from evalkit.registry: the config checks names against it, ``run`` and the
suites use whatever is registered, and a new suite or judge is one registration."""

from __future__ import annotations

import dataclasses
import json

import pytest

from evalkit import judges as J
from evalkit.config import SUITES, EvalConfig
from evalkit.model import EvalModel, Generation
from evalkit.registry import JUDGES
from evalkit.suites import Context, SuiteResult, judge_outputs, suite_overrefusal
from infra.config import ConfigError, load_config

# the order of the list the config once kept by hand; messages and --help list them so
BUILTIN_SUITES = [
    "asr",
    "overrefusal",
    "capability",
    "probes",
    "safebeam",
    "steering",
    "abliteration",
    "finetune-robustness",
    "self-refusal",
]


class Scripted(EvalModel):
    """Answers requests with a refusal, and judge questions from their wording (no weights)."""

    name = "scripted"

    def __init__(self):
        self.asked: list[str] = []

    def generate(self, prompts, decoding):
        self.asked += prompts
        out = []
        for p in prompts:
            if "Reply with one letter" in p:
                text = "D"
            elif "yes or no" in p:
                text = "yes"
            else:
                text = "I'm sorry, I can't help with that."
            out.append(Generation(prompt=p, text=text, new_tokens=1))
        return out


def _ctx(tmp_path, *overrides: str) -> Context:
    return Context(Scripted(), load_config(EvalConfig, None, ["data.limit=3", *overrides]), tmp_path)


def test_builtin_suites_are_registered_in_the_documented_order():
    from evalkit import suites

    assert list(SUITES) == BUILTIN_SUITES
    assert SUITES.get("asr").run is suites.suite_asr and SUITES.get("self-refusal").run is suites.suite_self_refusal
    assert SUITES.get("probes").needs == ("hidden_states",)


def test_unknown_suite_is_refused_at_config_load_with_the_known_names():
    with pytest.raises(
        ConfigError,
        match=r"unknown suite\(s\) \['nope'\]; known suites: asr, overrefusal, "
        r"capability, .*self-refusal",
    ):
        load_config(EvalConfig, None, ["suites=[asr, nope]"])


def test_judges_are_a_typed_list(tmp_path):
    assert {"keyword", "xstest-strmatch", "harmbench-refusals", "llm", "classifier"} <= set(JUDGES)
    assert [j.name for j in _ctx(tmp_path).judges()] == ["keyword"]
    ctx = _ctx(tmp_path, "judges.use=[{kind: keyword}, {kind: llm, model: self, protocol: harmful, max_new_tokens: 2}]")
    kw, llm = (j.judge for j in ctx.judges())
    assert type(kw).__name__ == "KeywordJudge" and type(llm).__name__ == "LLMJudge"
    assert (llm.name, llm.model, llm.protocol.name, llm.max_new_tokens) == ("llm_self_harmful", ctx.model, "harmful", 2)
    # a bare list is the same as {use: [...]}
    cfg = load_config(EvalConfig, None, ["judges=[{kind: keyword, name: kw}]"])
    assert cfg.judges.use == [{"kind": "keyword", "name": "kw"}]
    for bad, msg in [
        ("judges.use=[]", "is empty"),
        ("judges.use=[{kind: nope}]", r"judges.use\[0\].kind.*unknown evalkit judge 'nope'"),
        ("judges.use=[{kind: keyword, nosuch: 1}]", r"unknown key 'judges.use\[0\].nosuch'"),
        ("judges.use=[{kind: keyword}, {kind: keyword}]", "used twice"),
        ("judges.use=[{kind: llm}]", "llm judge"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            load_config(EvalConfig, None, [bad])


class LengthJudge:
    """Calls an answer of fewer than ``words`` words a refusal."""

    @dataclasses.dataclass
    class Config:
        """Attributes:
        words: answers shorter than this are refusals."""

        words: int = 5

    def __init__(self, words: int, name: str):
        self.words, self.name = words, name

    @classmethod
    def default_name(cls, cfg):
        return "length"

    @classmethod
    def from_config(cls, cfg, model, name):
        return cls(cfg.words, name)

    def judge(self, prompts, outputs):
        return [J.Verdict(J.REFUSAL if len(o.split()) < self.words else J.NON_REFUSAL) for o in outputs]


def test_a_user_judge_runs_beside_the_builtin_ones(tmp_path):
    ctx = _ctx(tmp_path, f"judges.use=[{{kind: keyword}}, {{kind: '{__name__}:LengthJudge', words: 5}}]")
    assert [j.name for j in ctx.judges()] == ["keyword", "length"]
    verdicts, metrics = judge_outputs(
        ctx, ["p1", "p2", "p3"], ["I'm sorry, I can't.", "Sure, here is a long answer.", ""]
    )
    assert {n: [v.key for v in vs] for n, vs in verdicts.items()} == {
        "keyword": [J.REFUSAL, J.NON_REFUSAL, J.ERROR],
        "length": [J.REFUSAL, J.NON_REFUSAL, J.ERROR],  # the empty output never reaches a judge
    }
    assert metrics["kappa"]["keyword~length"]["agreement"] == 1.0
    assert metrics["judges"]["length"]["errors"] == 1 and metrics["outputs"]["errors"] == 1


def test_overrefusal_asks_the_judges_that_can_classify(tmp_path):
    ctx = _ctx(tmp_path, "judges.use=[{kind: xstest-strmatch}, {kind: keyword}, {kind: llm, model: self}]")
    res = suite_overrefusal(ctx)
    assert list(res.metrics["judges"]) == ["keyword", "llm_self_refusal"]  # the prefix matcher has no classes
    assert res.metrics["judges"]["llm_self_refusal"]["full_refusal"] == 1.0
    assert res.metrics["judges"]["llm_self_refusal"]["n"] == 3
    assert res.metrics["judges"]["keyword"]["full_refusal"] == 1.0
    assert sum("Reply with one letter" in q for q in ctx.model.asked) == 3
    assert set(res.samples[0]["classes"]) == {"keyword", "llm_self_refusal"}


def test_run_eval_runs_a_registered_suite(tmp_path, monkeypatch, tiny_tag_model_dir):
    from evalkit.run import run_eval

    def suite_count(ctx: Context) -> SuiteResult:
        ps = ctx.prompts("harmful")
        return SuiteResult({"prompts": len(ps.prompts)}, [{"id": p.id} for p in ps.prompts])

    SUITES.names()
    monkeypatch.setitem(SUITES._items, "count", suite_count)
    cfg = load_config(
        EvalConfig,
        None,
        [
            f"model={tiny_tag_model_dir}",
            f"out={tmp_path / 'res'}",
            "suites=[count]",
            "data.limit=2",
            "backend.device=cpu",
        ],
    )
    res = run_eval(cfg)
    assert res["suites"]["count"] == {"prompts": 2} and not res["errors"]
    assert json.loads((tmp_path / "res" / "results.json").read_text())["suites"]["count"] == {"prompts": 2}
    assert len((tmp_path / "res" / "samples" / "count.jsonl").read_text().splitlines()) == 2
