"""``evalkit run``: load the model once, run each suite, write the results folder."""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from pathlib import Path

from evalkit.config import EvalConfig
from evalkit.model import open_model, resolve_model_dir
from evalkit.report import make_plots, write_json, write_report, write_samples
from evalkit.suites import SUITES, Context, as_suite, seed_everything
from infra.config import save_config, to_dict
from infra.folders import ResultsFolder
from infra.log import get_logger

log = get_logger(__name__)


def run_eval(cfg: EvalConfig) -> dict:
    """Run ``cfg.suites`` on ``cfg.model``; write ``cfg.out``; return the results dict.

    A suite that fails is recorded under ``errors`` (with its message) and the others still run.
    """
    if not cfg.model:
        raise ValueError("no model given: --model PATH (HF folder or trainer checkpoint)")
    if not cfg.out:
        raise ValueError("no output folder given: --out DIR")
    out = Path(cfg.out)
    rf = ResultsFolder(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, rf.config)
    seed_everything(cfg.decoding.seed)
    model_dir = resolve_model_dir(cfg.model, out)
    results: dict = {
        "model": {"path": str(cfg.model), "hf_dir": str(model_dir)},
        "decoding": to_dict(cfg.decoding),
        "backend": to_dict(cfg.backend),
        "judges": to_dict(cfg.judges),
        "data": to_dict(cfg.data),
        "suites": {},
        "timings_s": {},
        "errors": {},
    }
    all_plots: dict = {}
    with open_model(model_dir, cfg.backend) as model:
        results["model"].update(model.describe())
        results["model"]["name"] = Path(cfg.model).name
        ctx = Context(model, cfg, out)
        suites = {name: as_suite(name, SUITES.get(name)) for name in cfg.suites}
        for name, s in suites.items():  # before any work: a suite the backend cannot serve fails now
            model.require(f"suite {name!r}", *s.needs)
        ctx.judges()  # a judge that cannot be built (no server, no judge folder) fails before any suite
        for suite in cfg.suites:
            t0 = time.perf_counter()
            log.info("suite %s on %s", suite, cfg.model)
            try:
                res = suites[suite](ctx)
            except Exception as e:  # noqa: BLE001 - one failing suite must not lose the others
                log.error("suite %s failed: %s", suite, e)
                results["errors"][suite] = f"{type(e).__name__}: {e}"
                rf.errors_log.open("a", encoding="utf-8").write(f"== {suite}\n{traceback.format_exc()}\n")
                continue
            results["suites"][suite] = res.metrics
            results["timings_s"][suite] = round(time.perf_counter() - t0, 2)
            if res.samples:
                write_samples(out, suite, res.samples)
            if res.plots:
                all_plots[suite] = res.plots
    if ctx.skipped:
        with rf.skipped.open("w", encoding="utf-8") as f:
            for s in ctx.skipped:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
    results["skipped_rows"] = len(ctx.skipped)
    results["filtered_prompts"] = ctx.filtered  # prompts a split or data.limit left out, per set
    results = rf.write_results(results)
    plots = make_plots(out, all_plots)
    write_report(out, results, plots, cfg.report)
    return results


def abliterate_model(cfg: EvalConfig, save_to: Path) -> dict:
    """``evalkit abliterate``: direction on the train split, edit, evaluate before/after, save."""
    from evalkit.model import HFModel
    from evalkit.suites import run_abliteration

    model_dir = resolve_model_dir(cfg.model, Path(save_to).parent)
    cfg = dataclasses.replace(cfg, out=str(save_to))
    model = HFModel(model_dir, cfg.backend.prompt_style, cfg.backend.device, cfg.backend.dtype)
    ctx = Context(model, cfg, Path(save_to))
    res = run_abliteration(ctx, model, Path(save_to))
    write_json(Path(save_to) / "abliteration.json", res.metrics | {"source_model": str(model_dir)})
    write_samples(Path(save_to), "abliteration", res.samples)
    return res.metrics
