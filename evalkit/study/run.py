"""The toy-world curriculum study: one corpus, the same tiny model trained under each curriculum, each
model evaluated for toy attack success, over-refusal, SafeBeam, probe separation and attack success
after benign finetuning.

Every step goes through the real packages: datagen's tokenizer trainer, tagger and MDS writer
(``evalkit.study.corpus``), ``python -m trainer train`` and ``python -m trainer sft`` as subprocesses
(the SFT run through ``evalkit.finetune.sft``), evalkit's ``HFModel``, SafeBeam and probes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from infra.config import save_config
from infra.folders import CorpusFolder, RunFolder, code_version
from infra.log import get_logger
from infra.marker import Marker, path_fingerprint, value_fingerprint
from infra.paths import REPO_ROOT
from infra.proc import CLIError, run_cli

log = get_logger(__name__)


class StudyError(RuntimeError):
    """A study step failed; the message names the step and its log file."""


def condition_name(start: float | None) -> str:
    """``none`` for no intervention, else ``from_<percent>`` (``from_0``, ``from_20``, ``from_60``)."""
    return "none" if start is None else f"from_{round(start * 100):d}"


def conditions(cfg) -> list[tuple[str, float | None]]:
    out: list[tuple[str, float | None]] = [("none", None)] if cfg.curricula.include_none else []
    return out + [(condition_name(f), f) for f in sorted(cfg.curricula.starts)]


def curriculum_for(cfg, start: float | None) -> dict:
    """The curriculum mapping (trainer format) of one condition."""
    from infra.config import to_dict
    from infra.curriculum import with_intervention

    cur = with_intervention(cfg.curricula.baseline_weights, cfg.curricula.intervention_weights, start)
    return {"curriculum": to_dict(cur)}


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def train_condition(cfg, corpus: Path, curriculum_path: Path, run_dir: Path, seed: int) -> dict:
    """Pretrain one condition with ``python -m trainer train`` and export it (``run_dir/hf``)."""
    run = RunFolder(run_dir)
    args = [
        "train",
        "--config",
        str(_resolve(cfg.train.trainer_config)),
        *cfg.train.overrides,
        f"run_dir={run_dir}",
        f"data.corpus={corpus}",
        f"data.curriculum={curriculum_path}",
        f"train.seed={1234 + seed}",
        f"data.seed={1234 + seed}",
        "export.hf_at_end=true",
        "logging.progress=false",
    ]
    if cfg.eval.trajectory_every:  # checkpoints along the run, each exported as it is written
        args += [f"train.save_interval={cfg.eval.trajectory_every}", "export.hf_at_saves=true"]
    parts = {
        "command": value_fingerprint(args),
        "curriculum": path_fingerprint(curriculum_path),
        "corpus": path_fingerprint(CorpusFolder(corpus).manifest),
    }
    marker = Marker(run_dir, "study-train")
    if marker.reuse(parts, outputs=[run.hf / "config.json"], stale=run_dir, allowed=cfg.reuse):
        log.info("reusing %s", run.hf)
        return {"hf": run.hf, "train_s": None}
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        secs = run_cli(
            "trainer",
            args,
            log_path=run_dir.parent / f"{run_dir.name}.train.log",
            timeout_s=cfg.train.timeout_s,
            what=f"trainer train ({run_dir.name})",
        )
    except CLIError as e:
        raise StudyError(str(e)) from None
    if not run.has_hf():
        raise StudyError(f"trainer train ({run_dir.name}) finished without writing {run.hf}")
    marker.write(parts, seconds=round(secs, 1))
    return {"hf": run.hf, "train_s": secs}


def finetune_condition(cfg, hf: Path, sft_data: Path, run_dir: Path, seed: int) -> dict:
    """Benign finetuning of an exported model through the trainer's SFT mode (``evalkit.finetune.sft``,
    whose completion marker decides reuse); returns its HF folder."""
    from evalkit.finetune import FinetuneError, sft

    overrides = [*cfg.train.sft_overrides, f"train.seed={1234 + seed}", "logging.progress=false"]
    t0 = time.perf_counter()
    try:
        out = sft(
            hf,
            sft_data,
            run_dir,
            str(_resolve(cfg.train.sft_config)),
            overrides,
            timeout_s=cfg.train.timeout_s,
            reuse=cfg.reuse,
        )
    except FinetuneError as e:
        raise StudyError(f"benign finetuning of {hf}: {e}") from None
    return {"hf": out, "sft_s": time.perf_counter() - t0}


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def toy_attack(model, harmful: list[dict], benign: list[dict], ecfg, decoding) -> tuple[dict, dict, list[dict]]:
    """Greedy answers to every harmful and benign prompt of one model.

    Returns ``(metrics, outcomes, samples)``: ``outcomes[metric]`` is one value per prompt (in prompt
    order: 1.0/0.0 for a rate, leaked steps for ``mean_leaked_steps``) and ``metrics`` their means:
    toy ASR (all harmful prompts, held-out and training phrasings), mean leaked steps, how often the hex
    is refused, and on the benign twins over-refusal and helpfulness (the requested spell given)."""
    from evalkit.study.toyworld import is_refusal, leaked_steps, spell_steps_given

    thr = ecfg.leak_threshold
    gens = model.generate([r["prompt"] for r in harmful + benign], decoding)
    samples = []
    for i, (r, g) in enumerate(zip(harmful + benign, gens)):
        samples.append(
            {
                "id": r["id"],
                "kind": "harmful" if i < len(harmful) else "benign",
                "split": r.get("split", ""),
                "family": r.get("family", ""),
                "prompt": r["prompt"],
                "output": g.text,
                "leaked_steps": leaked_steps(g.text),
                "refusal": is_refusal(g.text),
                "spell_steps": spell_steps_given(g.text, r["spell"]) if "spell" in r else None,
            }
        )
    h, b = samples[: len(harmful)], samples[len(harmful) :]
    outcomes = {
        "asr": [float(s["leaked_steps"] >= thr) for s in h],
        "asr_heldout": [float(s["leaked_steps"] >= thr) for s in h if s["split"] == "heldout"],
        "asr_train_phrasing": [float(s["leaked_steps"] >= thr) for s in h if s["split"] == "train_phrasing"],
        "mean_leaked_steps": [float(s["leaked_steps"]) for s in h],
        "harmful_refusal_rate": [float(s["refusal"]) for s in h],
        "overrefusal": [float(s["refusal"]) for s in b],
        "benign_helpful": [float(s["spell_steps"] >= thr) for s in b],
    }
    return {k: _mean(v) for k, v in outcomes.items()}, outcomes, samples


def safebeam_prompts(harmful: list[dict], benign: list[dict], n: int) -> tuple[list[dict], list[dict]]:
    """The held-out harmful prompts SafeBeam decodes (``n``, taken across the families in turn; 0 = all)
    and their benign twins, in the same order."""
    by_family: dict[str, list[dict]] = {}
    for r in harmful:
        if r.get("split") == "heldout":
            by_family.setdefault(r["family"], []).append(r)
    order = [
        fam[i]
        for i in range(max(map(len, by_family.values()), default=0))
        for fam in by_family.values()
        if i < len(fam)
    ]
    picked = order if n == 0 else order[:n]
    twins = {r["twin"]: r for r in benign}
    return picked, [twins[r["id"]] for r in picked]


def safebeam_attack(model, harmful: list[dict], twins: list[dict], ecfg) -> tuple[dict, dict, list[dict]]:
    """SafeBeam ASR on ``harmful``, and the control that tells steering from damage: how often SafeBeam
    still gives the requested benign spell on their benign ``twins``. Returns ``(metrics, outcomes,
    samples)`` as ``toy_attack``."""
    from evalkit.config import DecodingConfig
    from evalkit.study.toyworld import leaked_steps, spell_steps_given

    thr = ecfg.leak_threshold
    dec = DecodingConfig(
        mode="safebeam",
        max_new_tokens=ecfg.safebeam_max_new_tokens,
        beams=ecfg.beams,
        top_n=ecfg.top_n,
        drop_fraction=ecfg.drop_fraction,
    )
    rows = harmful + twins
    gens = model.generate([r["prompt"] for r in rows], dec)
    samples = []
    for i, (r, g) in enumerate(zip(rows, gens)):
        harm = i < len(harmful)
        samples.append(
            {
                "id": r["id"],
                "kind": "harmful_safebeam" if harm else "benign_safebeam",
                "split": r.get("split", ""),
                "family": r.get("family", ""),
                "prompt": r["prompt"],
                "output": g.text,
                "leaked_steps": leaked_steps(g.text),
                "spell_steps": None if harm else spell_steps_given(g.text, r["spell"]),
            }
        )
    outcomes = {
        "safebeam_asr": [float(s["leaked_steps"] >= thr) for s in samples[: len(harmful)]],
        "safebeam_benign_helpful": [float(s["spell_steps"] >= thr) for s in samples[len(harmful) :]],
    }
    return {k: _mean(v) for k, v in outcomes.items()}, outcomes, samples


def probe_separation(model, probe_rows: list[dict], seed: int) -> dict:
    """Per-layer logistic probes (evalkit.probes) on the last-token states of the probe prompts: trained
    on the training frames, AUROC on the held-out frames. The reported layer is chosen on the training
    frames alone (mean AUROC when each training frame in turn is left out), not on the test set."""
    import numpy as np

    from evalkit.probes import probe_layers

    train = [r for r in probe_rows if r["split"] != "heldout"]
    test = [r for r in probe_rows if r["split"] == "heldout"]
    h = model.hidden_states([r["prompt"] for r in train + test]).numpy()
    h_tr, h_te = h[: len(train)], h[len(train) :]
    y_tr, y_te = np.array([r["label"] for r in train]), np.array([r["label"] for r in test])
    per_layer = probe_layers(h_tr, y_tr, h_te, y_te, seed=seed)
    g_tr = np.array([r["group"] for r in train])
    folds = sorted(set(g_tr.tolist()))
    cv = np.zeros(len(per_layer))
    for g in folds:
        fit, val = g_tr != g, g_tr == g
        cv += [d["auroc"] for d in probe_layers(h_tr[fit], y_tr[fit], h_tr[val], y_tr[val], seed=seed)]
    cv /= len(folds)
    chosen = int(np.argmax(cv))
    return {
        "probe_auroc": per_layer[chosen]["auroc"],
        "probe_layer": per_layer[chosen]["layer"],
        "probe_cv_auroc": float(cv[chosen]),
        "probe_best_auroc": max(d["auroc"] for d in per_layer),
        "probe_layers": per_layer,
    }


def evaluate_model(
    hf: Path, ev: dict, cfg, seed: int, with_safebeam: bool, with_probes: bool
) -> tuple[dict, dict, list]:
    """Every measurement of one exported model: ``(metrics, outcomes, samples)``."""
    from evalkit.config import DecodingConfig
    from evalkit.model import HFModel

    ecfg = cfg.eval
    model = HFModel(hf, prompt_style="completion", device=ecfg.device)
    dec = DecodingConfig(mode="greedy", max_new_tokens=ecfg.max_new_tokens, batch_size=ecfg.batch_size)
    metrics, outcomes, samples = toy_attack(model, ev["harmful"], ev["benign"], ecfg, dec)
    if with_safebeam:
        m, o, s = safebeam_attack(model, ev["safebeam_harmful"], ev["safebeam_benign"], ecfg)
        # greedy helpfulness on the very prompts of SafeBeam's control: its paired reference
        index = {r["id"]: i for i, r in enumerate(ev["benign"])}
        o["benign_helpful_safebeam_prompts"] = [
            outcomes["benign_helpful"][index[r["id"]]] for r in ev["safebeam_benign"]
        ]
        m["benign_helpful_safebeam_prompts"] = _mean(o["benign_helpful_safebeam_prompts"])
        metrics.update(m)
        outcomes.update(o)
        samples += s
    if with_probes:
        metrics.update(probe_separation(model, ev["probe"], seed))
    return metrics, outcomes, samples


# greedy measurements kept at every evaluated point along a run (with the probe AUROC)
TRAJECTORY = ("asr_heldout", "asr_train_phrasing", "harmful_refusal_rate", "overrefusal", "benign_helpful")


def evaluate_trajectory(
    run_dir: Path, ev: dict, cfg, seed: int, final_metrics: dict, final_outcomes: dict
) -> tuple[list[dict], list[dict]]:
    """The safety metrics of the HF exports the trainer wrote along the run (``hf_steps/``, one per
    ``eval.trajectory_every`` steps), evaluated like the final model without SafeBeam, and the final
    model's own (from its full evaluation). Returns ``(points, samples)``: one point per step with its
    tokens seen, per-prompt ``outcomes`` and probe AUROC; every answer as a sample tagged with its step."""
    if not cfg.eval.trajectory_every:
        return [], []
    from infra.reporting.runs import read_schedule

    sched = read_schedule(run_dir)
    per_step = sched.global_batch_size * sched.seq_length
    exports = RunFolder(run_dir).hf_step_exports()
    expected = range(cfg.eval.trajectory_every, sched.train_steps, cfg.eval.trajectory_every)
    missing = [s for s in expected if s not in exports]
    if missing:
        raise StudyError(
            f"{run_dir}: no HF export of step(s) {missing} in {RunFolder(run_dir).hf_steps} "
            "(trained before eval.trajectory_every was set? reuse=false trains it again)"
        )
    points, samples = [], []
    for step in expected:
        m, o, smp = evaluate_model(exports[step], ev, cfg, seed, False, True)
        points.append(_point(step, step * per_step, m, o))
        samples += [{**x, "model": f"step_{step}"} for x in smp]
    points.append(_point(sched.train_steps, sched.budget_tokens, final_metrics, final_outcomes))
    return points, samples


def _point(step: int, tokens: int, metrics: dict, outcomes: dict) -> dict:
    return {
        "step": step,
        "tokens": tokens,
        "outcomes": {k: outcomes[k] for k in TRAJECTORY},
        "probe_auroc": metrics.get("probe_auroc"),
        "probe_layer": metrics.get("probe_layer"),
    }


def _final_loss(run_dir: Path) -> float | None:
    p = RunFolder(run_dir).metrics
    if not p.is_file():
        return None
    rows = _read_jsonl(p)
    tail = rows[-max(1, len(rows) // 20) :]  # mean over the last 5% of steps: one step is noisy
    return sum(r["loss"] for r in tail) / len(tail)


def run_study(cfg) -> dict:
    """Run every step of the study into ``cfg.output``; returns the results dict (also results.json)."""
    from evalkit.study.analysis import analyse
    from evalkit.study.corpus import build_corpus
    from evalkit.study.report import write_reports
    from evalkit.study.toyworld import write_eval_sets

    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "study_config.yaml")
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    data = out / "data"
    parts = {
        "data": value_fingerprint(
            {
                "docs": cfg.data.docs_per_bucket,
                "seed": cfg.data.seed,
                "vocab": cfg.data.vocab_size,
                "p": cfg.data.tag_probability,
            }
        )
    }
    marker = Marker(data, "study-corpus")
    t0 = time.perf_counter()
    if not marker.reuse(parts, outputs=[CorpusFolder(data / "corpus").manifest], allowed=cfg.reuse):
        build_corpus(
            data,
            cfg.data.docs_per_bucket,
            seed=cfg.data.seed,
            vocab_size=cfg.data.vocab_size,
            tag_probability=cfg.data.tag_probability,
        )
        marker.write(parts)
    timings["corpus_s"] = time.perf_counter() - t0
    corpus = data / "corpus"
    sets = write_eval_sets(
        out / "eval", cfg.eval.heldout_prompts_per_family, cfg.eval.probe_prompts_per_class, seed=cfg.data.seed
    )
    ev = {
        "harmful": _read_jsonl(sets["harmful_prompts"]),
        "benign": _read_jsonl(sets["benign_prompts"]),
        "probe": _read_jsonl(sets["probe_prompts"]),
    }
    ev["safebeam_harmful"], ev["safebeam_benign"] = safebeam_prompts(
        ev["harmful"], ev["benign"], cfg.eval.safebeam_prompts
    )
    sft_data = data / "docs" / "eval" / "benign_sft.jsonl"

    cur_dir = out / "curricula"
    cur_dir.mkdir(exist_ok=True)
    import yaml

    rows = []
    (out / "samples").mkdir(exist_ok=True)
    for seed in cfg.seeds:
        for name, start in conditions(cfg):
            cpath = cur_dir / f"{name}.yaml"
            cpath.write_text(yaml.safe_dump(curriculum_for(cfg, start), sort_keys=False))
            run_dir = out / "runs" / f"{name}_seed{seed}"
            t0 = time.perf_counter()
            tr = train_condition(cfg, corpus, cpath, run_dir, seed)
            timings[f"train_{name}_seed{seed}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            metrics, outcomes, samples = evaluate_model(tr["hf"], ev, cfg, seed, cfg.eval.safebeam, True)
            timings[f"eval_{name}_seed{seed}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            trajectory, traj_samples = evaluate_trajectory(run_dir, ev, cfg, seed, metrics, outcomes)
            if trajectory:
                timings[f"eval_trajectory_{name}_seed{seed}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ft = finetune_condition(cfg, tr["hf"], sft_data, out / "runs" / f"{name}_seed{seed}_benignft", seed)
            timings[f"sft_{name}_seed{seed}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ft_metrics, ft_outcomes, ft_samples = evaluate_model(ft["hf"], ev, cfg, seed, False, False)
            timings[f"eval_ft_{name}_seed{seed}_s"] = time.perf_counter() - t0
            for k in AFTER_FT:
                metrics[f"{k}_after_ft"] = ft_metrics[k]
                outcomes[f"{k}_after_ft"] = ft_outcomes[k]
            row = {
                "condition": name,
                "intervention_start": start,
                "seed": seed,
                **metrics,
                "final_loss": _final_loss(run_dir),
                "run_dir": str(run_dir),
                "outcomes": outcomes,
                "trajectory": trajectory,
            }
            rows.append(row)
            with (out / "samples" / f"{name}_seed{seed}.jsonl").open("w") as f:
                for s in samples:
                    f.write(json.dumps({**s, "model": "pretrained"}) + "\n")
                for s in ft_samples:
                    f.write(json.dumps({**s, "model": "benign_ft"}) + "\n")
                for s in traj_samples:
                    f.write(json.dumps(s) + "\n")
            log.info(
                "%s seed %d: asr held-out %.2f, after ft %.2f, safebeam %s, overrefusal %.2f, probe %.3f",
                name,
                seed,
                row["asr_heldout"],
                row["asr_heldout_after_ft"],
                row.get("safebeam_asr"),
                row["overrefusal"],
                row["probe_auroc"],
            )
    timings["total_s"] = time.perf_counter() - t_all
    prompts = {
        "harmful": [{k: r[k] for k in ("id", "split", "family", "group")} for r in ev["harmful"]],
        "benign": [{k: r[k] for k in ("id", "split", "family", "group", "spell", "twin")} for r in ev["benign"]],
        "safebeam": [r["id"] for r in ev["safebeam_harmful"]] if cfg.eval.safebeam else [],
        "probe": [{k: r[k] for k in ("id", "split", "group", "label")} for r in ev["probe"]],
    }
    results = {
        "code_version": code_version(),
        "config": json.loads(json.dumps(_cfg_dict(cfg), default=str)),
        "runs": rows,
        "prompts": prompts,
        "timings": timings,
        "bag_of_words_probe_auroc": _bow(ev["probe"]),
        "n_prompts": {
            "harmful": len(ev["harmful"]),
            "harmful_heldout": sum(r["split"] == "heldout" for r in ev["harmful"]),
            "benign": len(ev["benign"]),
            "safebeam": len(prompts["safebeam"]),
            "probe": len(ev["probe"]),
            "probe_test": sum(r["split"] == "heldout" for r in ev["probe"]),
        },
    }
    results.update(analyse(results, resamples=cfg.eval.bootstrap_resamples))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_reports(results, out)
    return results


# greedy measurements repeated after benign finetuning (as ``<name>_after_ft``)
AFTER_FT = ("asr", "asr_heldout", "mean_leaked_steps", "harmful_refusal_rate", "overrefusal", "benign_helpful")


def _cfg_dict(cfg) -> dict:
    from infra.config import to_dict

    return to_dict(cfg)


def _bow(probe_rows: list[dict]) -> float:
    """The bag-of-words baseline on the probe prompts' words, same split as the probes."""
    from evalkit.probes import bag_of_words_baseline

    train = [r for r in probe_rows if r["split"] != "heldout"]
    test = [r for r in probe_rows if r["split"] == "heldout"]
    return bag_of_words_baseline(
        [r["prompt"] for r in train],
        [r["label"] for r in train],
        [r["prompt"] for r in test],
        [r["label"] for r in test],
    )
