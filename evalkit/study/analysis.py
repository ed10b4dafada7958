"""What the study's outcomes say: each condition's mean with a 95% interval over seeds and prompts, the
paired difference of every two conditions (same seeds, same prompts) with its interval and
permutation p-value, held-out ASR per family of phrasing, SafeBeam against its benign control, the
probes against the bag-of-words baseline, and the difference the design can detect given the spread
between seeds it measured. The statistics themselves are ``evalkit.study.stats``.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from evalkit.study import stats

# metric -> the prompts its per-prompt outcomes are over ("model": one number per trained model)
METRICS = {
    "asr": "harmful",
    "asr_heldout": "harmful_heldout",
    "asr_train_phrasing": "harmful_train",
    "mean_leaked_steps": "harmful",
    "harmful_refusal_rate": "harmful",
    "overrefusal": "benign",
    "benign_helpful": "benign",
    "asr_after_ft": "harmful",
    "asr_heldout_after_ft": "harmful_heldout",
    "mean_leaked_steps_after_ft": "harmful",
    "harmful_refusal_rate_after_ft": "harmful",
    "overrefusal_after_ft": "benign",
    "benign_helpful_after_ft": "benign",
    "safebeam_asr": "safebeam",
    "safebeam_benign_helpful": "safebeam_benign",
    "benign_helpful_safebeam_prompts": "safebeam_benign",
    "probe_auroc": "model",
    "final_loss": "model",
}
# compared between every two conditions; the first two are the study's question (decided before any run)
PRIMARY = ("asr_heldout", "asr_heldout_after_ft")
COMPARED = PRIMARY + (
    "harmful_refusal_rate",
    "overrefusal",
    "benign_helpful",
    "overrefusal_after_ft",
    "benign_helpful_after_ft",
    "safebeam_asr",
    "safebeam_benign_helpful",
    "probe_auroc",
)


def _groups(prompts: dict) -> dict[str, list | None]:
    """The phrasing frame of each outcome column, per population (None: one column per model)."""
    harmful = prompts["harmful"]
    by_id = {r["id"]: r for r in harmful}
    sb = [by_id[i] for i in prompts.get("safebeam", [])]
    return {
        "harmful": [r["group"] for r in harmful],
        "harmful_heldout": [r["group"] for r in harmful if r["split"] == "heldout"],
        "harmful_train": [r["group"] for r in harmful if r["split"] == "train_phrasing"],
        "benign": [r["group"] for r in prompts["benign"]],
        "safebeam": [r["group"] for r in sb],
        "safebeam_benign": [r["group"] for r in sb],  # each twin shares its harmful prompt's frame
        "model": None,
    }


def _values(row: dict, metric: str) -> list[float] | None:
    if METRICS[metric] == "model":
        v = row.get(metric)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else [float(v)]
    v = row.get("outcomes", {}).get(metric)
    return v if v else None


def _matrix(rows: list[dict], metric: str, seeds: list[int]) -> np.ndarray | None:
    by_seed = {r["seed"]: r for r in rows}
    vals = [_values(by_seed[s], metric) for s in seeds]
    if any(v is None for v in vals):
        return None
    return np.asarray(vals, dtype=float)


def _conditions(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["condition"] for r in rows))


def analyse(results: dict, resamples: int = 2000) -> dict:
    """``summary``, ``comparisons``, ``families``, ``safebeam_control``, ``probe`` and ``power`` of a
    study's ``results`` (its ``runs`` with per-prompt ``outcomes`` and its ``prompts``)."""
    rows, prompts = results["runs"], results["prompts"]
    groups = _groups(prompts)
    names = _conditions(rows)
    per = {c: [r for r in rows if r["condition"] == c] for c in names}
    seeds = {c: sorted(r["seed"] for r in per[c]) for c in names}

    summary = []
    for c in names:
        s = {"condition": c, "intervention_start": per[c][0]["intervention_start"], "seeds": seeds[c], "metrics": {}}
        for m, pop in METRICS.items():
            v = _matrix(per[c], m, seeds[c])
            if v is not None:
                s["metrics"][m] = stats.mean_interval(v, groups[pop], resamples=resamples)
        summary.append(s)

    comparisons = []
    for a, b in combinations(names, 2):
        common = sorted(set(seeds[a]) & set(seeds[b]))
        if not common:
            continue
        for m in COMPARED:
            va, vb = _matrix(per[a], m, common), _matrix(per[b], m, common)
            if va is None or vb is None:
                continue
            d = stats.paired_difference(vb, va, groups[METRICS[m]], resamples=resamples)
            comparisons.append({"a": a, "b": b, "metric": m, "primary": m in PRIMARY, **d})

    families = []
    heldout = [r for r in prompts["harmful"] if r["split"] == "heldout"]
    fam_names = list(dict.fromkeys(r["family"] for r in heldout))
    for c in names:
        for key in ("asr_heldout", "asr_heldout_after_ft"):
            v = _matrix(per[c], key, seeds[c])
            if v is None:
                continue
            for f in fam_names:
                cols = [j for j, r in enumerate(heldout) if r["family"] == f]
                g = [heldout[j]["group"] for j in cols]
                families.append(
                    {"condition": c, "metric": key, "family": f, **stats.mean_interval(v[:, cols], g, resamples)}
                )

    safebeam_control = []
    for c in names:
        sb = _matrix(per[c], "safebeam_benign_helpful", seeds[c])
        greedy = _matrix(per[c], "benign_helpful_safebeam_prompts", seeds[c])
        if sb is None or greedy is None:
            continue
        d = stats.paired_difference(sb, greedy, groups["safebeam_benign"], resamples=resamples)
        safebeam_control.append(
            {
                "condition": c,
                "safebeam_benign_helpful": float(sb.mean()),
                "greedy_benign_helpful": float(greedy.mean()),
                # about these models on these prompts: the prompt-level interval decides, even for one seed
                "control_drops": bool(d["ci"] and d["ci"][1] < 0),
                **d,
            }
        )

    bow = results.get("bag_of_words_probe_auroc")
    probe = []
    for s in summary:
        m = s["metrics"].get("probe_auroc")
        if m is None:
            continue
        probe.append(
            {
                "condition": s["condition"],
                **m,
                "bag_of_words": bow,
                "above_baseline": bool(bow is not None and m["n_seeds"] >= 2 and m["ci"] and m["ci"][0] > bow),
            }
        )

    power = []
    n_seeds = min((len(v) for v in seeds.values()), default=0)
    for m in COMPARED:
        sds = [d["seed_sd"] for d in comparisons if d["metric"] == m and d["n_seeds"] > 1]
        if not sds or n_seeds < 2:
            continue
        sd = math.sqrt(sum(x * x for x in sds) / len(sds))  # root mean square over the pairs
        power.append(
            {
                "metric": m,
                "n_seeds": n_seeds,
                "seed_sd_of_differences": sd,
                "detectable_difference": stats.detectable_difference(sd, n_seeds),
                "min_p": stats.min_p(n_seeds),
            }
        )
    return {
        "summary": summary,
        "comparisons": comparisons,
        "families": families,
        "safebeam_control": safebeam_control,
        "probe": probe,
        "power": power,
        "trajectory": trajectory_summary(per, seeds, groups, resamples),
    }


def trajectory_summary(per: dict, seeds: dict, groups: dict, resamples: int) -> list[dict]:
    """Each condition's safety metrics at every step evaluated in all of its seeds (``runs[].trajectory``):
    the mean with the same interval over seeds and prompts as the final summary (probe AUROC: over
    seeds)."""
    from evalkit.study.run import TRAJECTORY

    out = []
    for c, rows in per.items():
        by_seed = {r["seed"]: {p["step"]: p for p in r.get("trajectory") or []} for r in rows}
        steps = set.intersection(*(set(d) for d in by_seed.values())) if by_seed else set()
        for step in sorted(steps):
            pts = [by_seed[s][step] for s in seeds[c]]
            entry = {"condition": c, "step": step, "tokens": pts[0]["tokens"], "metrics": {}}
            for m in TRAJECTORY:
                v = np.asarray([p["outcomes"][m] for p in pts], dtype=float)
                if v.size:
                    entry["metrics"][m] = stats.mean_interval(v, groups[METRICS[m]], resamples=resamples)
            if all(p.get("probe_auroc") is not None for p in pts):
                v = np.asarray([[p["probe_auroc"]] for p in pts], dtype=float)
                entry["metrics"]["probe_auroc"] = stats.mean_interval(v, None, resamples=resamples)
            out.append(entry)
    return out
