"""Refuse before the queue: each job's own package config, loaded the way the job will load it.

A job runs ``python -m trainer train --config C k=v ...`` (or ``datagen run``, ``evalkit run``) in
``environment.workdir``. Here the same config file and the same overrides go through the package's own
loader (``infra.config.load_config`` with ``TrainerConfig``/``DatagenConfig``/``EvalConfig``: unknown
keys, types, each package's ``validate``, curriculum files), from the workdir, so that a typo fails now
with the key and the file named rather than as a traceback on the node after the queue wait. On top of
that come the checks the package can only make once it runs on the allocation: the parallel layout
(TP dividing the heads, PP the layers, DP the global batch) and the inputs it reads.

The config loaders are light (no torch). The model presets (``trainer.model``) need torch: where torch is
not importable here (a login node with the base install), the layout check runs in the job's virtualenv
(``python -m launch.preflight trainer ...``), and is skipped with a warning when there is none.

``python -m launch.preflight trainer --workdir DIR --world N --config C [k=v ...]`` prints the layout
problems as JSON (what the subprocess path runs).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from infra.config import ConfigError, load_config


@dataclass
class CheckResult:
    """What one job's package config said: problems that refuse the launch, warnings, and the
    values the launch needs for its own checks (the inputs the job will read)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)  # config key -> path the job reads
    config: object | None = None


@contextlib.contextmanager
def in_dir(path: Path) -> Iterator[None]:
    """Run a block from ``path`` (the job's working folder), as the job resolves relative paths."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def pending_files(files: dict[Path, str], overrides: list[str]) -> Iterator[list[str]]:
    """Overrides with every path of a file the plan writes at submission (a sweep's curricula)
    replaced by a temporary copy, so that the package loader can read it now."""
    used = {p: t for p, t in files.items() if any(str(p) in o for o in overrides)}
    if not used:
        yield list(overrides)
        return
    with tempfile.TemporaryDirectory(prefix="spt-preflight-") as tmp:
        out = list(overrides)
        for i, (path, text) in enumerate(used.items()):
            copy = Path(tmp) / f"{i}_{path.name}"
            copy.write_text(text)
            out = [o.replace(str(path), str(copy)) for o in out]
        yield out


def _config_error(key: str, config: str, e: Exception) -> str:
    return f"{key}: the job's config ({config} with the job's overrides) is refused by its package: {e}"


def _is_url(p: str) -> bool:
    return "://" in p


# -- trainer -------------------------------------------------------------------------------------
def trainer_layout_errors(cfg, world_size: int, workdir: Path) -> list[str]:
    """TP/PP/DP of ``world_size`` ranks against the model and the batch (needs torch: ``trainer.model``)."""
    from trainer.model import arch_of

    p, t, m = cfg.parallel, cfg.train, cfg.model
    errors = []
    if cfg.init.hf:
        hf = Path(cfg.init.hf)
        hf = hf if hf.is_absolute() else workdir / hf
        try:
            arch = arch_of(m, hf)
        except (OSError, ValueError, KeyError) as e:
            return [f"init.hf: {hf}/config.json cannot be read ({e})"]
        where = f"init.hf {hf}"
    else:
        try:
            arch = arch_of(m)
        except ValueError as e:
            return [str(e)]
        where = f"model.preset {m.preset}"
    if world_size % (p.tp * p.pp):
        errors.append(
            f"{world_size} ranks are not divisible by parallel.tp*parallel.pp = {p.tp}*{p.pp} (the trainer "
            "needs WORLD_SIZE = TP * PP * DP)"
        )
        return errors
    dp = world_size // (p.tp * p.pp)
    if arch.num_attention_heads % p.tp:
        errors.append(f"parallel.tp={p.tp} does not divide the {arch.num_attention_heads} attention heads ({where})")
    if arch.num_query_groups % p.tp:
        errors.append(f"parallel.tp={p.tp} does not divide the {arch.num_query_groups} key/value heads ({where})")
    if arch.ffn_hidden_size % p.tp:
        errors.append(f"parallel.tp={p.tp} does not divide the FFN width {arch.ffn_hidden_size} ({where})")
    if arch.hidden_size % arch.num_attention_heads:
        errors.append(f"hidden size {arch.hidden_size} is not a multiple of {arch.num_attention_heads} heads ({where})")
    if arch.num_layers % p.pp:
        errors.append(f"parallel.pp={p.pp} does not divide the {arch.num_layers} layers ({where})")
    if t.global_batch_size % (t.micro_batch_size * dp):
        errors.append(
            f"train.global_batch_size={t.global_batch_size} is not a multiple of micro_batch_size*DP = "
            f"{t.micro_batch_size}*{dp} ({world_size} ranks / (tp {p.tp} * pp {p.pp}))"
        )
    return errors


def _layout_in_subprocess(python: Path, workdir: Path, config: str, overrides: list[str], world: int) -> list[str]:
    cmd = [str(python), "-m", "launch.preflight", "trainer", "--workdir", str(workdir), "--world", str(world)]
    cmd += ["--config", config, "--", *overrides]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=workdir)
    if res.returncode != 0:
        return [f"the layout check in {python} failed: {(res.stderr or res.stdout).strip()[-800:]}"]
    return json.loads(res.stdout.strip().splitlines()[-1])["errors"]


def check_trainer(
    key: str,
    config: str,
    overrides: list[str],
    *,
    workdir: Path,
    world_size: int,
    files: dict[Path, str] | None = None,
    job_python: Path | None = None,
) -> CheckResult:
    """``trainer train --config CONFIG OVERRIDES`` on ``world_size`` ranks, checked as the trainer will.

    ``key`` names the launch job in messages; ``files`` are files the plan writes at submission;
    ``job_python`` is the job's Python on this host (its virtualenv) for the layout check when torch
    is not importable here.
    """
    from trainer.config import TrainerConfig

    out = CheckResult()
    with pending_files(files or {}, overrides) as ov, in_dir(workdir):
        try:
            cfg = load_config(TrainerConfig, config, ov)
        except ConfigError as e:
            out.errors.append(_config_error(key, config, e))
            return out
        out.config = cfg
        if importlib.util.find_spec("torch") is not None:
            layout = trainer_layout_errors(cfg, world_size, workdir)
        elif job_python is not None and job_python.is_file():
            layout = _layout_in_subprocess(job_python, workdir, config, ov, world_size)
        else:
            layout = []
            out.warnings.append(
                f"{key}: the parallel layout (TP/PP/DP against heads, layers and batch) was not checked: torch "
                "is not importable here and the job has no virtualenv on this host; the trainer checks it at start"
            )
    where = f"({config} with the job's overrides, on {world_size} ranks)"
    out.errors += [f"{key}: {e} {where}" for e in layout]
    if cfg.sft.path:
        out.inputs["sft.path"] = cfg.sft.path
    elif cfg.data.corpus:
        out.inputs["data.corpus"] = cfg.data.corpus
    if cfg.init.hf:
        out.inputs["init.hf"] = cfg.init.hf
    return out


def curriculum_bucket_errors(key: str, cfg, corpus: Path) -> list[str]:
    """Buckets the curriculum weights that the corpus's manifest does not have (the trainer fails on them)."""
    from infra.corpus import Manifest
    from infra.curriculum import resolve_curriculum

    if cfg.sft.path or cfg.data.curriculum is None or not (corpus / "manifest.json").is_file():
        return []
    try:
        cur = resolve_curriculum(cfg.data.curriculum)
        have = set(Manifest.load(corpus).buckets)
    except (ConfigError, OSError, ValueError, KeyError, TypeError):
        return []
    missing = sorted({b for ph in cur.phases for b, w in ph.weights.items() if w > 0} - have)
    if missing:
        return [
            f"{key}: data.curriculum weights bucket(s) {missing} that the corpus {corpus} does not have "
            f"(its buckets: {sorted(have)})"
        ]
    return []


# -- datagen -------------------------------------------------------------------------------------
def check_datagen(key: str, config: str, args: list[str], *, workdir: Path) -> CheckResult:
    """``datagen run --config CONFIG ARGS`` checked with ``DatagenConfig`` from the job's folder; the
    local input path is an input of the job."""
    from datagen.config import DatagenConfig

    out = CheckResult()
    with in_dir(workdir):
        try:
            cfg = load_config(DatagenConfig, config, args)
        except ConfigError as e:
            out.errors.append(_config_error(key, config, e))
            return out
    out.config = cfg
    if cfg.input.path and not _is_url(cfg.input.path):
        out.inputs["input.path"] = cfg.input.path
    return out


# -- evalkit -------------------------------------------------------------------------------------
def eval_config_args(extra_args: list[str]) -> tuple[str | None, list[str], list[str]]:
    """``evalkit run``'s extra arguments split into ``--config`` value, ``key=value`` overrides and the rest."""
    config, overrides, rest = None, [], []
    it = iter(range(len(extra_args)))
    for i in it:
        a = extra_args[i]
        if a in ("--config", "-c") and i + 1 < len(extra_args):
            config = extra_args[i + 1]
            next(it, None)
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
        elif "=" in a and not a.startswith("-"):
            overrides.append(a)
        else:
            rest.append(a)
    return config, overrides, rest


def check_eval(
    key: str, suite: str, extra_args: list[str], models: list[str], *, workdir: Path, section: str = "eval"
) -> CheckResult:
    """``evalkit run --model M --suite S --out O EXTRA`` (or ``evalkit track``, ``section="track"``) checked
    with ``EvalConfig`` as ``evalkit`` loads it."""
    from evalkit.config import EvalConfig
    from infra.config import resolve_config_path

    out = CheckResult()
    config, overrides, rest = eval_config_args(extra_args)
    if rest:
        out.errors.append(f"{key}: {section}.extra_args {rest} are neither --config FILE nor key=value overrides")
        return out
    suites = ",".join(s.strip() for s in suite.split(",") if s.strip())
    with in_dir(workdir):
        path = resolve_config_path(config or "configs/evalkit/default.yaml", "evalkit")
        if config is None and not path.is_file():
            path = None
        label = str(path) if path is not None else "evalkit's defaults"
        for m in models[:1]:  # the same config for every model; the models are inputs, checked by the plan
            try:
                out.config = load_config(EvalConfig, path, [*overrides, f"model={m}", f"suites=[{suites}]", "out=x"])
            except ConfigError as e:
                out.errors.append(_config_error(key, label, e))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.preflight", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("trainer", help="the parallel layout of a trainer config on N ranks, as JSON")
    t.add_argument("--workdir", required=True)
    t.add_argument("--world", type=int, required=True)
    t.add_argument("--config", required=True)
    t.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    from trainer.config import TrainerConfig

    workdir = Path(args.workdir).resolve()
    with in_dir(workdir):
        try:
            cfg = load_config(TrainerConfig, args.config, args.overrides)
        except ConfigError as e:
            print(json.dumps({"errors": [str(e)]}))
            return 0
        print(json.dumps({"errors": trainer_layout_errors(cfg, args.world, workdir)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
