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


def toy_attack(model, harmful: list[dict], benign: list[dict], ecfg, decoding) -> tuple[dict, list[dict]]:
    """Greedy toy ASR (overall, per split), mean leaked steps and over-refusal of one model."""
    from evalkit.study.toyworld import is_refusal, leaked_steps, spell_steps_given

    gens = model.generate([r["prompt"] for r in harmful + benign], decoding)
    samples = []
    for i, (r, g) in enumerate(zip(harmful + benign, gens)):
        kind = "harmful" if i < len(harmful) else "benign"
        samples.append(
            {
                "id": r["id"],
                "kind": kind,
                "split": r.get("split", ""),
                "prompt": r["prompt"],
                "output": g.text,
                "leaked_steps": leaked_steps(g.text),
                "refusal": is_refusal(g.text),
                "spell_steps": spell_steps_given(g.text, r["spell"]) if "spell" in r else None,
            }
        )
    h = [s for s in samples if s["kind"] == "harmful"]
    b = [s for s in samples if s["kind"] == "benign"]

    def asr(rows):
        return sum(s["leaked_steps"] >= ecfg.leak_threshold for s in rows) / len(rows) if rows else float("nan")

    m = {
        "asr": asr(h),
        "asr_train_phrasing": asr([s for s in h if s["split"] == "train_phrasing"]),
        "asr_heldout": asr([s for s in h if s["split"] == "heldout"]),
        "mean_leaked_steps": sum(s["leaked_steps"] for s in h) / len(h),
        "harmful_refusal_rate": sum(s["refusal"] for s in h) / len(h),
        "overrefusal": sum(s["refusal"] for s in b) / len(b),
        "benign_helpful": sum(s["spell_steps"] >= ecfg.leak_threshold for s in b) / len(b),
    }
    return m, samples


def safebeam_attack(model, harmful: list[dict], benign: list[dict], ecfg) -> tuple[dict, list[dict]]:
    """SafeBeam ASR on the harmful prompts, and the control that tells steering from damage: how often
    SafeBeam still gives the requested benign spell (one benign prompt per spell)."""
    from evalkit.config import DecodingConfig
    from evalkit.study.toyworld import leaked_steps, spell_steps_given

    dec = DecodingConfig(
        mode="safebeam",
        max_new_tokens=ecfg.safebeam_max_new_tokens,
        beams=ecfg.beams,
        top_n=ecfg.top_n,
        drop_fraction=ecfg.drop_fraction,
    )
    one_per_spell = list({r["spell"]: r for r in reversed(benign)}.values())[::-1]
    rows = harmful + one_per_spell
    gens = model.generate([r["prompt"] for r in rows], dec)
    samples = []
    for i, (r, g) in enumerate(zip(rows, gens)):
        harm = i < len(harmful)
        samples.append(
            {
                "id": r["id"],
                "kind": "harmful_safebeam" if harm else "benign_safebeam",
                "split": r.get("split", ""),
                "prompt": r["prompt"],
                "output": g.text,
                "leaked_steps": leaked_steps(g.text),
                "spell_steps": None if harm else spell_steps_given(g.text, r["spell"]),
            }
        )
    h = [s for s in samples if s["kind"] == "harmful_safebeam"]
    b = [s for s in samples if s["kind"] == "benign_safebeam"]
    return {
        "safebeam_asr": sum(s["leaked_steps"] >= ecfg.leak_threshold for s in h) / len(h),
        "safebeam_benign_helpful": sum(s["spell_steps"] >= ecfg.leak_threshold for s in b) / len(b),
    }, samples


def probe_separation(model, probe_rows: list[dict], seed: int) -> dict:
    """Per-layer logistic probes (evalkit.probes) trained on training phrasings, AUROC on held-out ones."""
    from evalkit.probes import probe_layers

    train = [r for r in probe_rows if r["split"] != "heldout"]
    test = [r for r in probe_rows if r["split"] == "heldout"]
    h = model.hidden_states([r["prompt"] for r in train + test]).numpy()
    per_layer = probe_layers(
        h[: len(train)], [r["label"] for r in train], h[len(train) :], [r["label"] for r in test], seed=seed
    )
    best = max(per_layer, key=lambda d: d["auroc"])
    return {"probe_best_auroc": best["auroc"], "probe_best_layer": best["layer"], "probe_layers": per_layer}


def evaluate_model(hf: Path, ev: dict, cfg, seed: int, with_safebeam: bool, with_probes: bool) -> tuple[dict, list]:
    from evalkit.config import DecodingConfig
    from evalkit.model import HFModel

    ecfg = cfg.eval
    model = HFModel(hf, prompt_style="completion", device=ecfg.device)
    dec = DecodingConfig(mode="greedy", max_new_tokens=ecfg.max_new_tokens, batch_size=ecfg.batch_size)
    metrics, samples = toy_attack(model, ev["harmful"], ev["benign"], ecfg, dec)
    if with_safebeam:
        m, s = safebeam_attack(model, ev["harmful"], ev["benign"], ecfg)
        metrics.update(m)
        samples += s
    if with_probes:
        metrics.update(probe_separation(model, ev["probe"], seed))
    return metrics, samples


def _final_loss(run_dir: Path) -> float | None:
    p = RunFolder(run_dir).metrics
    if not p.is_file():
        return None
    rows = _read_jsonl(p)
    tail = rows[-max(1, len(rows) // 20) :]  # mean over the last 5% of steps: one step is noisy
    return sum(r["loss"] for r in tail) / len(tail)


def run_study(cfg) -> dict:
    """Run every step of the study into ``cfg.output``; returns the results dict (also results.json)."""
    from evalkit.study.corpus import build_corpus
    from evalkit.study.report import write_reports
    from evalkit.study.toyworld import probe_prompts

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
    evd = data / "docs" / "eval"
    ev = {
        "harmful": _read_jsonl(evd / "harmful_prompts.jsonl"),
        "benign": _read_jsonl(evd / "benign_prompts.jsonl"),
        "probe": probe_prompts(cfg.eval.probe_prompts_per_class, seed=cfg.data.seed),
    }
    sft_data = evd / "benign_sft.jsonl"

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
            metrics, samples = evaluate_model(tr["hf"], ev, cfg, seed, cfg.eval.safebeam, True)
            timings[f"eval_{name}_seed{seed}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ft = finetune_condition(cfg, tr["hf"], sft_data, out / "runs" / f"{name}_seed{seed}_benignft", seed)
            timings[f"sft_{name}_seed{seed}_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            ft_metrics, ft_samples = evaluate_model(ft["hf"], ev, cfg, seed, False, False)
            timings[f"eval_ft_{name}_seed{seed}_s"] = time.perf_counter() - t0
            row = {
                "condition": name,
                "intervention_start": start,
                "seed": seed,
                **metrics,
                "asr_after_ft": ft_metrics["asr"],
                "asr_heldout_after_ft": ft_metrics["asr_heldout"],
                "mean_leaked_steps_after_ft": ft_metrics["mean_leaked_steps"],
                "overrefusal_after_ft": ft_metrics["overrefusal"],
                "benign_helpful_after_ft": ft_metrics["benign_helpful"],
                "final_loss": _final_loss(run_dir),
                "run_dir": str(run_dir),
            }
            rows.append(row)
            with (out / "samples" / f"{name}_seed{seed}.jsonl").open("w") as f:
                for s in samples:
                    f.write(json.dumps({**s, "model": "pretrained"}) + "\n")
                for s in ft_samples:
                    f.write(json.dumps({**s, "model": "benign_ft"}) + "\n")
            log.info(
                "%s seed %d: asr %.2f, after ft %.2f, safebeam %s, overrefusal %.2f, probe %.3f",
                name,
                seed,
                row["asr"],
                row["asr_after_ft"],
                row.get("safebeam_asr"),
                row["overrefusal"],
                row["probe_best_auroc"],
            )
    timings["total_s"] = time.perf_counter() - t_all
    results = {
        "code_version": code_version(),
        "config": json.loads(json.dumps(_cfg_dict(cfg), default=str)),
        "runs": rows,
        "summary": summarize(rows),
        "timings": timings,
        "bag_of_words_probe_auroc": _bow(ev["probe"]),
        "n_prompts": {"harmful": len(ev["harmful"]), "benign": len(ev["benign"]), "probe": len(ev["probe"])},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    write_reports(results, out)
    return results


def _cfg_dict(cfg) -> dict:
    from infra.config import to_dict

    return to_dict(cfg)


def _bow(probe_rows: list[dict]) -> float:
    from evalkit.probes import bag_of_words_baseline

    train = [r for r in probe_rows if r["split"] != "heldout"]
    test = [r for r in probe_rows if r["split"] == "heldout"]
    return bag_of_words_baseline(
        [r["prompt"] for r in train],
        [r["label"] for r in train],
        [r["prompt"] for r in test],
        [r["label"] for r in test],
    )


SUMMARY_METRICS = (
    "asr",
    "asr_heldout",
    "asr_after_ft",
    "asr_heldout_after_ft",
    "safebeam_asr",
    "safebeam_benign_helpful",
    "overrefusal",
    "benign_helpful",
    "benign_helpful_after_ft",
    "overrefusal_after_ft",
    "harmful_refusal_rate",
    "mean_leaked_steps",
    "probe_best_auroc",
    "final_loss",
)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and (population) std over seeds per condition, in condition order."""
    import math

    order: list[str] = []
    for r in rows:
        if r["condition"] not in order:
            order.append(r["condition"])
    out = []
    for c in order:
        rs = [r for r in rows if r["condition"] == c]
        s = {"condition": c, "intervention_start": rs[0]["intervention_start"], "seeds": len(rs)}
        for m in SUMMARY_METRICS:
            vals = [r[m] for r in rs if r.get(m) is not None and not (isinstance(r[m], float) and math.isnan(r[m]))]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            s[m] = mean
            s[f"{m}_std"] = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
        out.append(s)
    return out
