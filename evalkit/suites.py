"""The evaluation suites. Each takes a ``Context`` and returns ``SuiteResult(metrics, samples, plots)``.

metrics: flat-ish JSON-able dict written under the suite's name in results.json; samples: one dict
per prompt (prompt, output, every judge's verdict) written to ``samples/<suite>.jsonl``.

A suite is one ``@suite("name", needs=..., headline=...)`` above its function here (a ``Suite`` in
``evalkit.registry.SUITES``); ``suites:`` in the config then accepts the name, ``run`` checks the model's
capabilities before it starts, and the report and ``compare`` show its headline. The order of the
registrations is the order names are listed in messages.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from evalkit import judges as J
from evalkit.config import EvalConfig, steer_arm
from evalkit.data import DataError, PromptSet, load_prompts
from evalkit.model import EvalModel, HFModel, ModelError
from evalkit.registry import SUITES
from evalkit.verdict import output_error
from infra.log import get_logger

log = get_logger(__name__)


@dataclass
class SuiteResult:
    metrics: dict
    samples: list[dict] = field(default_factory=list)
    plots: dict = field(default_factory=dict)  # name -> {"kind": a renderer in evalkit.report.PLOTS, ...}


@dataclass
class Suite:
    """A registered suite: ``run(ctx) -> SuiteResult``; ``needs``: the model capabilities it uses
    (checked before any suite runs); ``headline(metrics) -> {key: number or rate}``: what the report
    and ``compare`` show first (a rate is a dict with value, ci95 and its counts, see ``headline_rate``)."""

    name: str
    run: Callable[[Context], SuiteResult]
    needs: tuple[str, ...] = ("generate",)
    headline: Callable[[dict], dict] = field(default=lambda m: {})

    def __call__(self, ctx: Context) -> SuiteResult:
        return self.run(ctx)

    @property
    def doc(self) -> str:
        return (self.run.__doc__ or "").strip().split("\n")[0]


def suite(name: str, needs: tuple[str, ...] = ("generate",), headline: Callable[[dict], dict] | None = None):
    """``@suite("name", needs=(...), headline=fn)`` above ``fn(ctx) -> SuiteResult``: the one registration
    of a suite."""

    def add(fn):
        SUITES.register(name, Suite(name, fn, tuple(needs), headline or (lambda m: {})))
        return fn

    return add


def as_suite(name: str, obj) -> Suite:
    """A registered entry as a ``Suite`` (a bare function registered by a user becomes one)."""
    return obj if isinstance(obj, Suite) else Suite(name, obj, ())


def headline_rate(summary: dict | None, key: str = "asr") -> dict | None:
    """A rate from a judge summary for the headline: value, interval and the counts it rests on."""
    if not summary or key not in summary:
        return None
    out = {"value": summary[key], "ci95": summary.get(f"{key}_ci95")}
    out |= {k: summary[k] for k in ("n", "judged", "unparsed", "errors") if k in summary}
    if summary.get("warning"):
        out["warning"] = summary["warning"]
    return out


@dataclass
class Context:
    """What every suite gets: the model, the resolved config, the output folder, a shared log of rows
    that could not be used (file, line, reason) and of prompts a split or limit left out."""

    model: EvalModel
    cfg: EvalConfig
    out: Path
    skipped: list[dict] = field(default_factory=list)
    filtered: dict = field(default_factory=dict)  # prompt set -> number of prompts left out
    _judges: list | None = None
    _cache: dict = field(default_factory=dict)

    def prompts(self, which: str, split: str | None = None) -> PromptSet:
        """Prompt set ``which`` (a DataConfig field) at ``split`` (default: data.split), limited."""
        key = (which, split)
        if key not in self._cache:
            ps = load_prompts(getattr(self.cfg.data, which))
            if not any(w == which for w, _ in self._cache):  # a bad row is one row, whatever the splits read
                self.skipped.extend(s | {"set": which} for s in ps.skipped)
            ps = ps.split(split or self.cfg.data.split).limit(self.cfg.data.limit)
            self.filtered[f"{which}:{split or self.cfg.data.split}"] = len(ps.filtered)
            if not ps.prompts:
                raise ValueError(
                    f"prompt set {which} ({getattr(self.cfg.data, which)}) has no prompts "
                    f"in split {split or self.cfg.data.split!r}"
                )
            self._cache[key] = ps
        return self._cache[key]

    def judges(self) -> list[J.ConfiguredJudge]:
        """The judges of ``judges.use``, in order."""
        if self._judges is None:
            self._judges = J.build_judges(self.cfg.judges, self.model)
        return self._judges

    def primary(self) -> J.ConfiguredJudge:
        """The judge whose ASR is a suite's ``asr``: the first with ``headline`` on (else the first)."""
        js = self.judges()
        return next((j for j in js if j.headline), js[0])

    def need(self, what: str, *caps: str) -> EvalModel:
        return self.model.require(f"suite {what!r}", *caps)


def _nanmean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else float("nan")


def generation_errors(gens) -> list[str]:
    """Per generation, why it cannot be judged ('' when it can)."""
    return [output_error(g.text, g.new_tokens, getattr(g, "error", "")) for g in gens]


def output_counts(errors: list[str]) -> dict:
    """How many outputs there were and why the unusable ones were unusable."""
    reasons = Counter(e for e in errors if e)
    return {"n": len(errors), "errors": sum(reasons.values()), "error_reasons": dict(reasons)}


def _warnings(summaries: dict, outputs: dict) -> list[str]:
    w = [m["warning"] for m in summaries.values() if m.get("warning")]
    if outputs["errors"]:
        w.insert(0, f"{outputs['errors']} of {outputs['n']} outputs are errors ({outputs['error_reasons']})")
    return w


def judge_outputs(ctx: Context, prompts: list[str], outputs: list[str], errors: list[str] | None = None):
    """Every judge on every output: ({judge: [Verdict]}, metrics with the ASR of each judge, its counts,
    the kappas between judges, and warnings)."""
    errors = errors if errors is not None else [output_error(o) for o in outputs]
    verdicts = J.run_judges(ctx.judges(), prompts, outputs, errors)
    share = ctx.cfg.judges.min_judged_share
    metrics: dict = {"judges": {n: J.refusal_summary(n, v, share) for n, v in verdicts.items()}}
    metrics["primary_judge"] = ctx.primary().name
    metrics["outputs"] = output_counts(errors)
    if len(verdicts) > 1:
        metrics["kappa"] = J.agreement(verdicts)
    metrics["warnings"] = _warnings(metrics["judges"], metrics["outputs"])
    for w in metrics["warnings"]:
        log.warning("%s", w)
    return verdicts, metrics


def verdict_fields(verdicts: dict[str, list], i: int) -> dict:
    """The sample fields of output i: each judge's label (or outcome), and the details where any."""
    out = {"verdicts": {n: v[i].key for n, v in verdicts.items()}}
    details = {
        n: v[i].to_json()
        for n, v in verdicts.items()
        if v[i].raw is not None or v[i].prob is not None or v[i].reason or v[i].detail
    }
    if details:
        out["judge_details"] = details
    return out


def answer_and_judge(ctx: Context, ps: PromptSet, decoding=None) -> tuple[dict, list[dict]]:
    texts = [p.prompt for p in ps.prompts]
    gens = ctx.model.generate(texts, decoding or ctx.cfg.decoding)
    errors = generation_errors(gens)
    verdicts, metrics = judge_outputs(ctx, texts, [g.text for g in gens], errors)
    has_ll = "loglikelihood" in ctx.model.capabilities
    scores = J.refusal_score(ctx.model, texts) if has_ll else [None] * len(texts)
    if has_ll:
        metrics["refusal_score_mean"] = _nanmean(scores)
    metrics["new_tokens_mean"] = _nanmean([g.new_tokens for g in gens])
    samples = [
        {"id": p.id, "prompt": p.prompt, "output": g.text, "new_tokens": g.new_tokens}
        | ({"error": errors[i]} if errors[i] else {})
        | verdict_fields(verdicts, i)
        | {"refusal_score": scores[i]}
        for i, (p, g) in enumerate(zip(ps.prompts, gens))
    ]
    metrics["asr"] = metrics["judges"][metrics["primary_judge"]]["asr"]
    return metrics, samples


def _harmful_set(ctx: Context) -> PromptSet:
    # base models are attacked with completion-style starts, instruct models with requests
    if ctx.model.prompt_style == "completion" and ctx.cfg.data.completion_harmful:
        try:
            return ctx.prompts("completion_harmful", "all")
        except DataError:
            pass
    return ctx.prompts("harmful")


def _headline_judges(metrics: dict, ctx_names=None) -> dict:
    """{asr: primary rate, <judge>: each headline judge's rate} of an answer_and_judge metrics."""
    h = {"asr": headline_rate(metrics["judges"].get(metrics.get("primary_judge")))}
    for name in metrics.get("headline_judges", list(metrics["judges"])):
        h[name] = headline_rate(metrics["judges"][name])
    return h


def _rates_plot(title: str, summaries: dict, key: str = "asr", ylabel: str = "ASR") -> dict:
    return {"kind": "rates", "title": title, "ylabel": ylabel, "key": key, "bars": summaries}


# -- suites ---------------------------------------------------------------------------------------
def _mark_headline(ctx: Context, metrics: dict) -> dict:
    metrics["headline_judges"] = [j.name for j in ctx.judges() if j.headline]
    return metrics


def _asr_headline(m: dict) -> dict:
    h = _headline_judges(m)
    if "refusal_score_mean" in m:
        h["refusal_score_mean"] = m["refusal_score_mean"]
    return h


def human_label_scores(ctx: Context) -> dict:
    """Every judge scored against ``judges.human_labels`` (the same figures as ``validate-judges``)."""
    from evalkit.validate import load_labels, validate_judges

    rows, skipped = load_labels(ctx.cfg.judges.human_labels)
    ctx.skipped.extend(skipped)
    if not rows:
        raise DataError(f"{ctx.cfg.judges.human_labels}: no usable human-label rows")
    res = validate_judges({j.name: j.judge for j in ctx.judges()}, rows)
    per_judge = Counter(d["judge"] for d in res["disagreements"])
    for name, m in res["judges"].items():
        m["disagreements"] = per_judge[name]
    return {"file": ctx.cfg.judges.human_labels, "rows": res["n"], "skipped": len(skipped), "judges": res["judges"]}


@suite("asr", headline=_asr_headline)
def suite_asr(ctx: Context) -> SuiteResult:
    """Attack success rate on harmful prompts, per judge, with agreement and human-label scores."""
    ps = _harmful_set(ctx)
    metrics, samples = answer_and_judge(ctx, ps)
    _mark_headline(ctx, metrics)
    if ctx.cfg.judges.human_labels:
        metrics["human"] = human_label_scores(ctx)
    return SuiteResult(metrics, samples, {"asr_by_judge": _rates_plot("asr: attack success rate", metrics["judges"])})


def _overrefusal_headline(m: dict) -> dict:
    h = {"overrefusal_rate": headline_rate(m["judges"].get(m.get("primary_judge")), "any_refusal")}
    for name in m.get("headline_judges", []):
        h[name] = headline_rate(m["judges"][name], "any_refusal")
    return h


@suite("overrefusal", headline=_overrefusal_headline)
def suite_overrefusal(ctx: Context) -> SuiteResult:
    """Benign but harmful-looking prompts: share of each of the four answer classes, per judge that can
    tell them (judged outputs only; errors and unparsed answers are counted beside)."""
    ps = ctx.prompts("overrefusal", "all")
    texts = [p.prompt for p in ps.prompts]
    gens = ctx.model.generate(texts, ctx.cfg.decoding)
    errors = generation_errors(gens)
    classes = J.run_judges(ctx.judges(), texts, [g.text for g in gens], errors, overrefusal=True)
    if not classes:
        raise ValueError(
            "no configured judge tells the over-refusal classes: add {kind: keyword} or an llm judge to judges.use"
        )
    share = ctx.cfg.judges.min_judged_share
    metrics: dict = {"judges": {n: J.class_summary(n, v, min_share=share) for n, v in classes.items()}}
    metrics["primary_judge"] = next(
        (j.name for j in ctx.judges() if j.headline and j.name in classes), next(iter(classes))
    )
    metrics["headline_judges"] = [j.name for j in ctx.judges() if j.headline and j.name in classes]
    metrics["outputs"] = output_counts(errors)
    metrics["warnings"] = _warnings(metrics["judges"], metrics["outputs"])
    metrics["overrefusal_rate"] = metrics["judges"][metrics["primary_judge"]]["any_refusal"]
    has_ll = "loglikelihood" in ctx.model.capabilities
    scores = J.refusal_score(ctx.model, texts) if has_ll else [None] * len(texts)
    if has_ll:
        metrics["refusal_score_mean"] = _nanmean(scores)
    samples = [
        {
            "id": p.id,
            "prompt": p.prompt,
            "category": p.meta.get("category"),
            "output": g.text,
        }
        | ({"error": errors[i]} if errors[i] else {})
        | {"classes": {k: v[i].key for k, v in classes.items()}, "refusal_score": scores[i]}
        for i, (p, g) in enumerate(zip(ps.prompts, gens))
    ]
    primary = metrics["judges"][metrics["primary_judge"]]
    plot = {
        "kind": "rates",
        "title": f"over-refusal: answer classes ({metrics['primary_judge']})",
        "ylabel": "share of judged answers",
        "bars": {
            c.replace("_", "\n"): primary | {"value": primary[c], "value_ci95": primary[f"{c}_ci95"]}
            for c in J.OVERREFUSAL_CLASSES
        },
    }
    return SuiteResult(metrics, samples, {"overrefusal_classes": plot})


def _capability_headline(m: dict) -> dict:
    return {"mean_acc": m["mean_acc"]} if "mean_acc" in m else {}


@suite("capability", needs=("loglikelihood",), headline=_capability_headline)
def suite_capability(ctx: Context) -> SuiteResult:
    """lm-eval-harness tasks on the in-process model."""
    from evalkit.capability import run_lm_eval

    if not isinstance(ctx.model, HFModel):
        raise ModelError(
            "suite 'capability' runs lm-eval on an in-process transformers model (backend.kind=transformers)"
        )
    metrics = run_lm_eval(ctx.model, ctx.cfg.capability, ctx.out / "capability")
    bars = {t: v.get("acc") for t, v in metrics["tasks"].items()}
    return SuiteResult(
        metrics,
        [],
        {"capability": {"kind": "values", "title": "capability (lm-eval)", "ylabel": "accuracy", "bars": bars}},
    )


def _train_test(ctx: Context, cap: int = 0):
    """Harmful and harmless prompts split into train/test by their ``split`` field."""
    out = {}
    for split in ("train", "test"):
        h = [p.prompt for p in ctx.prompts("harmful", split).prompts]
        s = [p.prompt for p in ctx.prompts("harmless", split).prompts]
        if cap:
            h, s = h[:cap], s[:cap]
        out[split] = (h, s)
    return out


def _probes_headline(m: dict) -> dict:
    return {k: m[k] for k in ("best_auroc", "best_layer", "bow_auroc") if k in m}


@suite("probes", needs=("hidden_states",), headline=_probes_headline)
def suite_probes(ctx: Context) -> SuiteResult:
    """Per-layer logistic probes on last-token activations: held-out AUROC and accuracy."""
    from evalkit.directions import activations
    from evalkit.probes import bag_of_words_baseline, probe_layers

    model = ctx.model
    tt = _train_test(ctx, ctx.cfg.direction.train_limit)
    (htr, str_), (hte, ste) = tt["train"], tt["test"]
    x_train = activations(model, htr + str_).numpy()
    x_test = activations(model, hte + ste).numpy()
    y_train = [1] * len(htr) + [0] * len(str_)
    y_test = [1] * len(hte) + [0] * len(ste)
    layers = probe_layers(x_train, y_train, x_test, y_test)
    best = max(layers, key=lambda r: (r["auroc"], r["accuracy"]))
    metrics = {
        "best_layer": best["layer"],
        "best_auroc": best["auroc"],
        "best_accuracy": best["accuracy"],
        "bow_auroc": bag_of_words_baseline(htr + str_, y_train, hte + ste, y_test),
        "n_train": len(y_train),
        "n_test": len(y_test),
        "layers": layers,
    }
    return SuiteResult(
        metrics, [], {"probe_auroc": {"kind": "probe_layers", "points": [(r["layer"], r["auroc"]) for r in layers]}}
    )


def _safebeam_headline(m: dict) -> dict:
    return {
        "asr_baseline": headline_rate(J.first_primary(m["baseline"])),
        "asr_safebeam": headline_rate(J.first_primary(m["safebeam"])),
    }


@suite("safebeam", needs=("generate", "next_token_logprobs"), headline=_safebeam_headline)
def suite_safebeam(ctx: Context) -> SuiteResult:
    """ASR with the configured decoding versus SafeBeam on the same prompts."""
    ps = _harmful_set(ctx)
    base_dec = (
        ctx.cfg.decoding
        if ctx.cfg.decoding.mode != "safebeam"
        else dataclasses.replace(ctx.cfg.decoding, mode="greedy")
    )
    sb_dec = dataclasses.replace(ctx.cfg.decoding, mode="safebeam")
    base, base_samples = answer_and_judge(ctx, ps, base_dec)
    sb, sb_samples = answer_and_judge(ctx, ps, sb_dec)
    metrics = {
        "baseline": base,
        "safebeam": sb,
        "asr_baseline": base["asr"],
        "asr_safebeam": sb["asr"],
        "asr_delta": sb["asr"] - base["asr"],
        "baseline_mode": base_dec.mode,
        "beams": sb_dec.beams,
        "top_n": sb_dec.top_n,
        "drop_fraction": sb_dec.drop_fraction,
        "warnings": base["warnings"] + sb["warnings"],
    }
    samples = [b | {"decoding": base_dec.mode} for b in base_samples] + [
        s | {"decoding": "safebeam"} for s in sb_samples
    ]
    bars = {base_dec.mode: J.first_primary(base), "safebeam": J.first_primary(sb)}
    return SuiteResult(
        metrics, samples, {"asr_by_decoding": _rates_plot(f"safebeam: ASR ({base['primary_judge']})", bars)}
    )


def _direction(ctx: Context, model: EvalModel, layer: int, tt) -> tuple:
    from evalkit.directions import mean_difference, tag_difference

    if ctx.cfg.direction.source == "tag":
        return tag_difference(model, tt["train"][1], layer)
    return mean_difference(model, tt["train"][0], tt["train"][1], layer)


def judged_refusals(ctx: Context, prompts: list[str], gens) -> tuple[list, dict]:
    """The primary judge's verdicts on ``gens`` and their refusal summary (rate with its counts)."""
    cj = ctx.primary()
    errors = generation_errors(gens)
    v = J.run_judges([cj], prompts, [g.text for g in gens], errors)[cj.name]
    return v, J.refusal_summary(cj.name, v, ctx.cfg.judges.min_judged_share)


def _steering_headline(m: dict) -> dict:
    return {
        f"{arm}.delta": v["refusal_score_delta"]
        for arm, v in m.items()
        if isinstance(v, dict) and "refusal_score_delta" in v
    }


@suite("steering", needs=("generate", "loglikelihood", "hidden_states", "steer"), headline=_steering_headline)
def suite_steering(ctx: Context) -> SuiteResult:
    """Each arm of ``direction.steer`` adds or subtracts the direction on a prompt set; by default it is
    added on harmless prompts (does refusal go up?) and subtracted on harmful ones (does ASR go up?):
    refusal score and the primary judge's refusal rate with and without steering."""
    from evalkit.directions import resolve_layer

    model = ctx.model
    layer = resolve_layer(model, ctx.cfg.direction.layer)
    tt = _train_test(ctx, ctx.cfg.direction.train_limit)
    v = _direction(ctx, model, layer, tt)
    scale = ctx.cfg.direction.scale
    sets = dict(zip(("harmful", "harmless"), tt["test"]))
    judge = ctx.primary().name
    out: dict = {
        "layer": layer,
        "scale": scale,
        "source": ctx.cfg.direction.source,
        "norm": float(v.norm()),
        "judge": judge,
        "warnings": [],
    }
    samples = []
    unsteered: dict = {}  # per prompt set, shared by its plus and minus arms
    for name in ctx.cfg.direction.steer:
        which, sign = steer_arm(name)
        if which not in sets:  # overrefusal: every prompt of the set, limited by data.limit
            sets[which] = [p.prompt for p in ctx.prompts(which, "all").prompts]
        prompts = sets[which]
        if which not in unsteered:
            gen = model.generate(prompts, ctx.cfg.decoding)
            unsteered[which] = (J.refusal_score(model, prompts), gen, *judged_refusals(ctx, prompts, gen))
        base_scores, base_gen, base_v, base_sum = unsteered[which]
        with model.steer(layer, v, sign * scale):
            st_scores = J.refusal_score(model, prompts)
            st_gen = model.generate(prompts, ctx.cfg.decoding)
        st_v, st_sum = judged_refusals(ctx, prompts, st_gen)
        out[name] = {
            "refusal_score_base": _nanmean(base_scores),
            "refusal_score_steered": _nanmean(st_scores),
            "refusal_score_delta": _nanmean(st_scores) - _nanmean(base_scores),
            "refusal_rate_base": base_sum["refusal_rate"],
            "refusal_rate_steered": st_sum["refusal_rate"],
            "base": base_sum,
            "steered": st_sum,
        }
        out["warnings"] += [
            f"{name} {k}: {m['warning']}" for k, m in (("base", base_sum), ("steered", st_sum)) if m.get("warning")
        ]
        samples += [
            {
                "set": name,
                "prompt": p,
                "output_base": b.text,
                "output_steered": s.text,
                "verdict_base": vb.key,
                "verdict_steered": vs.key,
                "refusal_score_base": sb,
                "refusal_score_steered": ss,
            }
            for p, b, s, vb, vs, sb, ss in zip(prompts, base_gen, st_gen, base_v, st_v, base_scores, st_scores)
        ]
    plot = {
        "kind": "steering",
        "title": f"activation steering: {ctx.cfg.direction.source} direction, layer {layer}, x{scale:g}",
        "judge": judge,
        "arms": {
            k: {
                "score": (out[k]["refusal_score_base"], out[k]["refusal_score_steered"]),
                "refusal": (out[k]["refusal_rate_base"], out[k]["refusal_rate_steered"]),
            }
            for k in ctx.cfg.direction.steer
        },
    }
    return SuiteResult(out, samples, {"steering": plot})


def _refusal_eval(ctx: Context, model: EvalModel, harmful, harmless) -> tuple[dict, list]:
    gens_h = model.generate(harmful, ctx.cfg.decoding)
    gens_s = model.generate(harmless, ctx.cfg.decoding)
    vh, sh = judged_refusals(ctx, harmful, gens_h)
    vs, ss = judged_refusals(ctx, harmless, gens_s)
    m = {
        "refusal_rate_harmful": sh["refusal_rate"],
        "refusal_rate_harmless": ss["refusal_rate"],
        "harmful": sh,
        "harmless": ss,
        "refusal_score_harmful": _nanmean(J.refusal_score(model, harmful)),
        "refusal_score_harmless": _nanmean(J.refusal_score(model, harmless)),
    }
    judge = ctx.primary().name
    samples = [
        {"prompt": p, "output": g.text, judge: v.key, "harmful": True} for p, g, v in zip(harmful, gens_h, vh)
    ] + [{"prompt": p, "output": g.text, judge: v.key, "harmful": False} for p, g, v in zip(harmless, gens_s, vs)]
    return m, samples


def _positions_along(model: EvalModel, harmful, harmless, r, layer: int) -> tuple[list[float], dict]:
    """One activation pass per set: mean |h . r| of the harmful prompts at every layer, and the signed
    mean position of each set along r at the direction's layer."""
    from evalkit.directions import activations, along

    ph, ps = along(activations(model, harmful), r), along(activations(model, harmless), r)
    return (
        [float(x) for x in ph.abs().mean(0)],
        {"projection_harmful": float(ph[:, layer + 1].mean()), "projection_harmless": float(ps[:, layer + 1].mean())},
    )


def run_abliteration(ctx: Context, model: EvalModel, save_to: Path | None = None) -> SuiteResult:
    """Direction on the train split, before/after evaluation on the test split, optional save.
    The model's weights are restored afterwards so that later suites see the original."""
    from evalkit.directions import abliterate, mean_difference, resolve_layer

    layer = resolve_layer(model, ctx.cfg.direction.layer)
    tt = _train_test(ctx, ctx.cfg.direction.train_limit)
    harmful, harmless = tt["test"]
    r = mean_difference(model, tt["train"][0], tt["train"][1], layer)
    r = r / r.norm()
    before, s_before = _refusal_eval(ctx, model, harmful, harmless)
    proj_before, signed = _positions_along(model, harmful, harmless, r, layer)
    before.update(signed)
    saved = {id(w): w.detach().clone() for _, _, w in model.output_projections()}
    rep = abliterate(model, r, layer)
    try:
        after, s_after = _refusal_eval(ctx, model, harmful, harmless)
        proj_after, signed = _positions_along(model, harmful, harmless, r, layer)
        after.update(signed)
        if save_to is not None:
            model.save(save_to)
    finally:
        import torch

        with torch.no_grad():
            for _, _, w in model.output_projections():
                w.copy_(saved[id(w)])
    metrics = {
        "layer": layer,
        "max_proj_before": rep.max_proj_before,
        "max_proj_after": rep.max_proj_after,
        "matrices": rep.matrices,
        "before": before,
        "after": after,
        "refusal_rate_drop": before["refusal_rate_harmful"] - after["refusal_rate_harmful"],
        "residual_projection_before": proj_before,
        "residual_projection_after": proj_after,
        "saved_to": str(save_to) if save_to else None,
    }
    samples = [s | {"stage": "before"} for s in s_before] + [s | {"stage": "after"} for s in s_after]
    rates = {
        "harmful": (before["refusal_rate_harmful"], after["refusal_rate_harmful"]),
        "harmless": (before["refusal_rate_harmless"], after["refusal_rate_harmless"]),
    }
    signed = {n: (before[f"projection_{n}"], after[f"projection_{n}"]) for n in ("harmful", "harmless")}
    return SuiteResult(
        metrics,
        samples,
        {
            "residual_projection": {"kind": "residual_projection", "before": proj_before, "after": proj_after},
            "refusal_before_after": {
                "kind": "before_after",
                "title": f"abliteration: refusals before and after ({ctx.primary().name})",
                "ylabel": "refusal rate",
                "rate": True,
                "sets": rates,
            },
            "projection_before_after": {
                "kind": "before_after",
                "title": "abliteration: where prompts sit along r",
                "ylabel": "mean h . r at the direction's layer",
                "rate": False,
                "sets": signed,
            },
        },
    )


def _abliteration_headline(m: dict) -> dict:
    return {k: m[k] for k in ("refusal_rate_drop", "max_proj_after") if k in m}


@suite(
    "abliteration",
    needs=("generate", "loglikelihood", "hidden_states", "edit_weights"),
    headline=_abliteration_headline,
)
def suite_abliteration(ctx: Context) -> SuiteResult:
    """Refusal direction projected out of the weights; refusals before and after."""
    return run_abliteration(ctx, ctx.model)


def _finetune_headline(m: dict) -> dict:
    return {
        "asr_before": headline_rate(J.first_primary(m["before"])),
        "asr_after": headline_rate(J.first_primary(m["after"])),
        "asr_delta": m["asr_delta"],
    }


@suite("finetune-robustness", headline=_finetune_headline)
def suite_finetune_robustness(ctx: Context) -> SuiteResult:
    """Benign finetuning with the trainer's SFT mode, then ``asr`` on both models."""
    from evalkit.finetune import benign_finetune

    before = suite_asr(ctx)
    ft_dir = benign_finetune(
        Path(getattr(ctx.model, "path", None) or ctx.cfg.model),
        ctx.cfg.finetune,
        ctx.out / "finetune",
    )
    ft_model = HFModel(ft_dir, ctx.cfg.backend.prompt_style, ctx.cfg.backend.device, ctx.cfg.backend.dtype)
    ft_ctx = Context(ft_model, ctx.cfg, ctx.out, ctx.skipped, ctx.filtered)
    after = suite_asr(ft_ctx)
    metrics = {
        "before": before.metrics,
        "after": after.metrics,
        "finetuned_model": str(ft_dir),
        "asr_before": before.metrics["asr"],
        "asr_after": after.metrics["asr"],
        "asr_delta": after.metrics["asr"] - before.metrics["asr"],
    }
    if "refusal_score_mean" in before.metrics:
        metrics["refusal_score_delta"] = after.metrics["refusal_score_mean"] - before.metrics["refusal_score_mean"]
    samples = [s | {"stage": "before"} for s in before.samples] + [s | {"stage": "after"} for s in after.samples]
    return SuiteResult(
        metrics,
        samples,
        {
            "asr_by_decoding": _rates_plot(
                f"finetune-robustness: ASR ({before.metrics['primary_judge']})",
                {"before finetune": J.first_primary(before.metrics), "after finetune": J.first_primary(after.metrics)},
            )
        },
    )


def _self_refusal_headline(m: dict) -> dict:
    return {"self_refusal_rate": headline_rate(m["self_report"], "refusal_rate")}


@suite("self-refusal", headline=_self_refusal_headline)
def suite_self_refusal(ctx: Context) -> SuiteResult:
    """The model judges its own answers (yes/no 'was that a refusal?'), compared with the judges."""
    texts, samples = [], []
    for which in ("harmful", "harmless"):
        try:
            ps = ctx.prompts(which)
        except DataError:
            continue
        texts += [(which, p) for p in ps.prompts]
    prompts = [p.prompt for _, p in texts]
    from evalkit.llm_judge import LLMJudge

    gens = ctx.model.generate(prompts, ctx.cfg.decoding)
    outputs = [g.text for g in gens]
    errors = generation_errors(gens)
    verdicts, metrics = judge_outputs(ctx, prompts, outputs, errors)
    selfj = J.ConfiguredJudge(LLMJudge(ctx.model, "self_refusal", name="self_report"), "self_report", "llm")
    self_v = J.run_judges([selfj], prompts, outputs, errors)["self_report"]
    metrics["self_report"] = J.refusal_summary("self_report", self_v, ctx.cfg.judges.min_judged_share)
    if metrics["self_report"].get("warning"):
        metrics["warnings"].append(metrics["self_report"]["warning"])
    metrics["self_vs_judges"] = {
        n: J.cohen_kappa([x.label for x in self_v], [x.label for x in v]) for n, v in verdicts.items()
    }
    samples = [
        {"set": which, "id": p.id, "prompt": p.prompt, "output": o}
        | ({"error": errors[i]} if errors[i] else {})
        | {"self_report": sv.key, "self_raw": sv.raw}
        | verdict_fields(verdicts, i)
        for i, ((which, p), o, sv) in enumerate(zip(texts, outputs, self_v))
    ]
    return SuiteResult(metrics, samples)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
