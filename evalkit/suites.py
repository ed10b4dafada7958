"""The evaluation suites. Each takes a ``Context`` and returns ``SuiteResult(metrics, samples, plots)``.

metrics: flat-ish JSON-able dict written under the suite's name in results.json; samples: one dict
per prompt (prompt, output, every judge's verdict) written to ``samples/<suite>.jsonl``.

A suite is one ``@SUITES.register("name")`` above its function here; ``suites:`` in the config then
accepts the name. The order of the registrations is the order names are listed in messages.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from evalkit import judges as J
from evalkit.config import EvalConfig, steer_arm
from evalkit.data import DataError, PromptSet, load_human_labels, load_prompts
from evalkit.model import EvalModel, HFModel, ModelError
from evalkit.registry import JUDGES, SUITES
from infra.log import get_logger

log = get_logger(__name__)


@dataclass
class SuiteResult:
    metrics: dict
    samples: list[dict] = field(default_factory=list)
    plots: dict = field(default_factory=dict)  # name -> data for evalkit.report plots


@dataclass
class Context:
    """What every suite gets: the model, the resolved config, the output folder, and a shared log of
    rows that could not be used (file, line, reason)."""

    model: EvalModel
    cfg: EvalConfig
    out: Path
    skipped: list[dict] = field(default_factory=list)
    _judges: list | None = None
    _cache: dict = field(default_factory=dict)

    def prompts(self, which: str, split: str | None = None) -> PromptSet:
        """Prompt set ``which`` (a DataConfig field) at ``split`` (default: data.split), limited."""
        key = (which, split)
        if key not in self._cache:
            ps = load_prompts(getattr(self.cfg.data, which))
            self.skipped.extend(s | {"set": which} for s in ps.skipped)
            ps = ps.split(split or self.cfg.data.split).limit(self.cfg.data.limit)
            if not ps.prompts:
                raise ValueError(
                    f"prompt set {which} ({getattr(self.cfg.data, which)}) has no prompts "
                    f"in split {split or self.cfg.data.split!r}"
                )
            self._cache[key] = ps
        return self._cache[key]

    def judges(self) -> list:
        """Every registered judge that ``cfg.judges`` switches on, in registry order (keyword, llm, classifier)."""
        if self._judges is None:
            js = [
                j
                for j in (JUDGES.get(kind).from_config(self.cfg.judges, self.model) for kind in JUDGES)
                if j is not None
            ]
            if not js:
                raise ValueError("no judge configured: set judges.keyword=true, judges.classifier or an LLM judge")
            self._judges = js
        return self._judges

    def hf(self, suite: str) -> HFModel:
        if not isinstance(self.model, HFModel):
            raise ModelError(f"suite {suite!r} reads hidden states or edits weights: use backend.kind=transformers")
        return self.model


def _nanmean(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else float("nan")


def judge_outputs(ctx: Context, prompts: list[str], outputs: list[str]) -> tuple[dict, dict]:
    """Every judge on every output: ({judge: verdicts}, metrics with ASR per judge and kappas)."""
    verdicts = {j.name: j.judge_many(prompts, outputs) for j in ctx.judges()}
    metrics: dict = {"judges": {n: J.verdict_summary(v) for n, v in verdicts.items()}}
    names = list(verdicts)
    kappas = {}
    for i in range(len(names)):
        for k in range(i + 1, len(names)):
            kappas[f"{names[i]}~{names[k]}"] = J.cohen_kappa(verdicts[names[i]], verdicts[names[k]])
    if kappas:
        metrics["kappa"] = kappas
    return verdicts, metrics


def answer_and_judge(ctx: Context, ps: PromptSet, decoding=None) -> tuple[dict, list[dict]]:
    texts = [p.prompt for p in ps.prompts]
    gens = ctx.model.generate(texts, decoding or ctx.cfg.decoding)
    outputs = [g.text for g in gens]
    verdicts, metrics = judge_outputs(ctx, texts, outputs)
    scores = J.refusal_score(ctx.model, texts) if isinstance(ctx.model, HFModel) else [None] * len(texts)
    if isinstance(ctx.model, HFModel):
        metrics["refusal_score_mean"] = _nanmean(scores)
    metrics["new_tokens_mean"] = _nanmean([g.new_tokens for g in gens])
    samples = [
        {
            "id": p.id,
            "prompt": p.prompt,
            "output": g.text,
            "new_tokens": g.new_tokens,
            "verdicts": {n: v[i] for n, v in verdicts.items()},
            "refusal_score": scores[i],
        }
        | (
            {"llm_raw": {j.name: j.raw[i] for j in ctx.judges() if isinstance(j, J.LLMJudge)}}
            if any(isinstance(j, J.LLMJudge) for j in ctx.judges())
            else {}
        )
        | {f"{j.name}_prob": j.probs[i] for j in ctx.judges() if hasattr(j, "probs")}
        for i, (p, g) in enumerate(zip(ps.prompts, gens))
    ]
    metrics["asr"] = J.first_judge(metrics)["asr"]
    return metrics, samples


def _harmful_set(ctx: Context) -> PromptSet:
    # base models are attacked with completion-style starts, instruct models with requests
    if ctx.model.prompt_style == "completion" and ctx.cfg.data.completion_harmful:
        try:
            return ctx.prompts("completion_harmful", "all")
        except DataError:
            pass
    return ctx.prompts("harmful")


# -- suites ---------------------------------------------------------------------------------------
@SUITES.register("asr")
def suite_asr(ctx: Context) -> SuiteResult:
    """Attack success rate on harmful prompts, per judge, with agreement and human-label scores."""
    ps = _harmful_set(ctx)
    metrics, samples = answer_and_judge(ctx, ps)
    if ctx.cfg.judges.human_labels:
        rows, skipped = load_human_labels(ctx.cfg.judges.human_labels)
        ctx.skipped.extend(skipped)
        labels = [r["label"] for r in rows]
        metrics["human"] = {}
        for j in ctx.judges():
            v = j.judge_many([r["prompt"] for r in rows], [r["output"] for r in rows])
            metrics["human"][j.name] = J.score_against_human(v, labels)
    return SuiteResult(metrics, samples, {"asr_by_judge": dict(metrics["judges"])})


@SUITES.register("overrefusal")
def suite_overrefusal(ctx: Context) -> SuiteResult:
    """Benign but harmful-looking prompts: share of each of the four answer classes."""
    ps = ctx.prompts("overrefusal", "all")
    texts = [p.prompt for p in ps.prompts]
    gens = ctx.model.generate(texts, ctx.cfg.decoding)
    classes = {"rules": [J.overrefusal_class(g.text) for g in gens]}
    for j in ctx.judges():
        classify = getattr(j, "overrefusal_classes", None)  # judges that can tell the four classes (LLM)
        if classify is not None:
            classes[j.name] = classify(texts, [g.text for g in gens])
    metrics: dict = {"judges": {}}
    for name, cl in classes.items():
        n = len(cl)
        parsed = [c for c in cl if c != J.UNPARSED]
        m = {c: (sum(x == c for x in parsed) / len(parsed) if parsed else float("nan")) for c in J.OVERREFUSAL_CLASSES}
        m.update(n=n, unparsed=n - len(parsed))
        m["any_refusal"] = m["partial_refusal"] + m["full_refusal"] if parsed else float("nan")
        metrics["judges"][name] = m
    metrics["overrefusal_rate"] = metrics["judges"]["rules"]["any_refusal"]
    scores = J.refusal_score(ctx.model, texts) if isinstance(ctx.model, HFModel) else [None] * len(texts)
    if isinstance(ctx.model, HFModel):
        metrics["refusal_score_mean"] = _nanmean(scores)
    samples = [
        {
            "id": p.id,
            "prompt": p.prompt,
            "category": p.meta.get("category"),
            "output": g.text,
            "classes": {k: v[i] for k, v in classes.items()},
            "refusal_score": scores[i],
        }
        for i, (p, g) in enumerate(zip(ps.prompts, gens))
    ]
    return SuiteResult(
        metrics, samples, {"overrefusal_classes": {c: metrics["judges"]["rules"][c] for c in J.OVERREFUSAL_CLASSES}}
    )


@SUITES.register("capability")
def suite_capability(ctx: Context) -> SuiteResult:
    from evalkit.capability import run_lm_eval

    metrics = run_lm_eval(ctx.hf("capability"), ctx.cfg.capability, ctx.out / "capability")
    return SuiteResult(metrics, [], {"capability": {t: v.get("acc") for t, v in metrics["tasks"].items()}})


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


@SUITES.register("probes")
def suite_probes(ctx: Context) -> SuiteResult:
    """Per-layer logistic probes on last-token activations: held-out AUROC and accuracy."""
    from evalkit.directions import activations
    from evalkit.probes import bag_of_words_baseline, probe_layers

    model = ctx.hf("probes")
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
    return SuiteResult(metrics, [], {"probe_auroc": [(r["layer"], r["auroc"]) for r in layers]})


@SUITES.register("safebeam")
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
    }
    samples = [b | {"decoding": base_dec.mode} for b in base_samples] + [
        s | {"decoding": "safebeam"} for s in sb_samples
    ]
    return SuiteResult(
        metrics, samples, {"asr_by_decoding": {base_dec.mode: J.first_judge(base), "safebeam": J.first_judge(sb)}}
    )


def _direction(ctx: Context, model: HFModel, layer: int, tt) -> tuple:
    from evalkit.directions import mean_difference, tag_difference

    if ctx.cfg.direction.source == "tag":
        return tag_difference(model, tt["train"][1], layer)
    return mean_difference(model, tt["train"][0], tt["train"][1], layer)


@SUITES.register("steering")
def suite_steering(ctx: Context) -> SuiteResult:
    """Each arm of ``direction.steer`` adds or subtracts the direction on a prompt set; by default it is
    added on harmless prompts (does refusal go up?) and subtracted on harmful ones (does ASR go up?):
    refusal score and keyword refusal rate with and without steering."""
    from evalkit.directions import resolve_layer

    model = ctx.hf("steering")
    layer = resolve_layer(model, ctx.cfg.direction.layer)
    tt = _train_test(ctx, ctx.cfg.direction.train_limit)
    v = _direction(ctx, model, layer, tt)
    scale = ctx.cfg.direction.scale
    sets = dict(zip(("harmful", "harmless"), tt["test"]))
    out: dict = {"layer": layer, "scale": scale, "source": ctx.cfg.direction.source, "norm": float(v.norm())}
    samples = []
    kw = J.KeywordJudge()
    unsteered: dict = {}  # per prompt set, shared by its plus and minus arms
    for name in ctx.cfg.direction.steer:
        which, sign = steer_arm(name)
        if which not in sets:  # overrefusal: every prompt of the set, limited by data.limit
            sets[which] = [p.prompt for p in ctx.prompts(which, "all").prompts]
        prompts = sets[which]
        if which not in unsteered:
            gen = [g.text for g in model.generate(prompts, ctx.cfg.decoding)]
            unsteered[which] = (J.refusal_score(model, prompts), gen, kw.judge_many(prompts, gen))
        base_scores, base_gen, base_ref = unsteered[which]
        with model.steer(layer, v, sign * scale):
            st_scores = J.refusal_score(model, prompts)
            st_gen = [g.text for g in model.generate(prompts, ctx.cfg.decoding)]
        st_ref = kw.judge_many(prompts, st_gen)
        out[name] = {
            "refusal_score_base": _nanmean(base_scores),
            "refusal_score_steered": _nanmean(st_scores),
            "refusal_score_delta": _nanmean(st_scores) - _nanmean(base_scores),
            "keyword_refusal_base": J.verdict_summary(base_ref)["refusal_rate"],
            "keyword_refusal_steered": J.verdict_summary(st_ref)["refusal_rate"],
        }
        samples += [
            {
                "set": name,
                "prompt": p,
                "output_base": b,
                "output_steered": s,
                "verdict_base": vb,
                "verdict_steered": vs,
                "refusal_score_base": sb,
                "refusal_score_steered": ss,
            }
            for p, b, s, vb, vs, sb, ss in zip(prompts, base_gen, st_gen, base_ref, st_ref, base_scores, st_scores)
        ]
    plot = {
        k: {
            "score": (out[k]["refusal_score_base"], out[k]["refusal_score_steered"]),
            "refusal": (out[k]["keyword_refusal_base"], out[k]["keyword_refusal_steered"]),
        }
        for k in ctx.cfg.direction.steer
    }
    plot["_title"] = f"activation steering: {ctx.cfg.direction.source} direction, layer {layer}, x{scale:g}"
    return SuiteResult(out, samples, {"steering": plot})


def _refusal_eval(ctx: Context, model: HFModel, harmful, harmless) -> tuple[dict, list]:
    gens_h = [g.text for g in model.generate(harmful, ctx.cfg.decoding)]
    gens_s = [g.text for g in model.generate(harmless, ctx.cfg.decoding)]
    kw = J.KeywordJudge()
    vh, vs = kw.judge_many(harmful, gens_h), kw.judge_many(harmless, gens_s)
    m = {
        "refusal_rate_harmful": J.verdict_summary(vh)["refusal_rate"],
        "refusal_rate_harmless": J.verdict_summary(vs)["refusal_rate"],
        "refusal_score_harmful": _nanmean(J.refusal_score(model, harmful)),
        "refusal_score_harmless": _nanmean(J.refusal_score(model, harmless)),
    }
    samples = [{"prompt": p, "output": o, "keyword": v, "harmful": True} for p, o, v in zip(harmful, gens_h, vh)] + [
        {"prompt": p, "output": o, "keyword": v, "harmful": False} for p, o, v in zip(harmless, gens_s, vs)
    ]
    return m, samples


def _positions_along(model: HFModel, harmful, harmless, r, layer: int) -> tuple[list[float], dict]:
    """One activation pass per set: mean |h . r| of the harmful prompts at every layer, and the signed
    mean position of each set along r at the direction's layer."""
    from evalkit.directions import activations, along

    ph, ps = along(activations(model, harmful), r), along(activations(model, harmless), r)
    return (
        [float(x) for x in ph.abs().mean(0)],
        {"projection_harmful": float(ph[:, layer + 1].mean()), "projection_harmless": float(ps[:, layer + 1].mean())},
    )


def run_abliteration(ctx: Context, model: HFModel, save_to: Path | None = None) -> SuiteResult:
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
            "residual_projection": (proj_before, proj_after),
            "refusal_before_after": rates,
            "projection_before_after": signed,
        },
    )


@SUITES.register("abliteration")
def suite_abliteration(ctx: Context) -> SuiteResult:
    return run_abliteration(ctx, ctx.hf("abliteration"))


@SUITES.register("finetune-robustness")
def suite_finetune_robustness(ctx: Context) -> SuiteResult:
    """Benign finetuning with the trainer's SFT mode, then ``asr`` on both models."""
    from evalkit.finetune import benign_finetune

    before = suite_asr(ctx)
    ft_dir = benign_finetune(
        Path(ctx.model.path if isinstance(ctx.model, HFModel) else ctx.cfg.model),
        ctx.cfg.finetune,
        ctx.out / "finetune",
    )
    ft_model = HFModel(ft_dir, ctx.cfg.backend.prompt_style, ctx.cfg.backend.device, ctx.cfg.backend.dtype)
    ft_ctx = Context(ft_model, ctx.cfg, ctx.out, ctx.skipped)
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
            "asr_by_decoding": {
                "before finetune": J.first_judge(before.metrics),
                "after finetune": J.first_judge(after.metrics),
            }
        },
    )


@SUITES.register("self-refusal")
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
    outputs = [g.text for g in ctx.model.generate(prompts, ctx.cfg.decoding)]
    verdicts, metrics = judge_outputs(ctx, prompts, outputs)
    selfj = J.LLMJudge(ctx.model, "self_report", J.SELF_REFUSAL_TEMPLATE)
    self_v = selfj.judge_many(prompts, outputs)
    metrics["self_report"] = J.verdict_summary(self_v)
    metrics["self_vs_judges"] = {n: J.cohen_kappa(self_v, v) for n, v in verdicts.items()}
    samples = [
        {
            "set": which,
            "id": p.id,
            "prompt": p.prompt,
            "output": o,
            "self_report": sv,
            "self_raw": raw,
            "verdicts": {n: v[i] for n, v in verdicts.items()},
        }
        for i, ((which, p), o, sv, raw) in enumerate(zip(texts, outputs, self_v, selfj.raw))
    ]
    return SuiteResult(metrics, samples)


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
