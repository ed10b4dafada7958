"""Benign finetuning through the trainer's SFT mode (its CLI; evalkit has no training loop of its own)."""

from __future__ import annotations

import shutil
from pathlib import Path

from evalkit.data import resolve_path
from infra.config import load_yaml
from infra.folders import RunFolder
from infra.log import get_logger
from infra.marker import Marker, path_fingerprint, value_fingerprint
from infra.proc import CLIError, run_cli

log = get_logger(__name__)


class FinetuneError(RuntimeError):
    pass


def sft(
    model_dir: Path,
    data: str | Path,
    run_dir: Path,
    trainer_config: str,
    overrides: list[str],
    timeout_s: float = 3600.0,
    keep_checkpoints: bool = False,
    reuse: bool = True,
) -> Path:
    """``python -m trainer sft --config CFG init.hf=MODEL sft.path=DATA run_dir=DIR export.hf_at_end=true``.

    The finetune is evaluated, not resumed: its checkpoints are written without optimizer state
    (``train.save_optimizer=false``; ``overrides`` may turn it back on) and, unless ``keep_checkpoints``,
    deleted once the HF folder is exported (for a 135M model that is 2.1 GB of checkpoint per finetune).
    A finished finetune in ``run_dir`` is reused while its completion marker matches the base model,
    the data, the trainer config and the command (``reuse=False`` always trains again).
    Returns ``run_dir/hf`` (an HF Llama folder). Raises ``FinetuneError`` with the trainer's stderr tail.
    """
    data_p = resolve_path(data)
    if not data_p.is_file():
        raise FinetuneError(f"SFT data not found: {data}")
    cfg_p = resolve_path(trainer_config).resolve()
    data_p = data_p.resolve()
    run = RunFolder(Path(run_dir).resolve())
    args = [
        "sft",
        "--config",
        str(cfg_p),
        f"init.hf={Path(model_dir).resolve()}",
        f"sft.path={data_p}",
        f"run_dir={run.root}",
        "export.hf_at_end=true",
        "train.save_optimizer=false",
        *overrides,
    ]
    # what the finetuned model depends on: a change to any part trains it again, from scratch
    parts = {
        "base_model": path_fingerprint(Path(model_dir).resolve(), content=False),
        "data": path_fingerprint(data_p),
        "trainer_config": value_fingerprint(load_yaml(cfg_p)),
        "command": value_fingerprint(args[3:]),
    }
    marker = Marker(run.root, "finetune")
    if marker.reuse(parts, outputs=[run.hf / "config.json"], stale=run.root, allowed=reuse):
        log.info("reusing finetuned model %s", run.hf)
        return run.hf
    run.root.mkdir(parents=True, exist_ok=True)
    try:
        run_cli("trainer", args, log_path=run.root / "sft.log", timeout_s=timeout_s, what="trainer sft")
    except CLIError as e:
        raise FinetuneError(str(e)) from None
    if not run.has_hf():
        raise FinetuneError(f"trainer sft finished without writing {run.hf} (log {run.root / 'sft.log'})")
    if not keep_checkpoints:
        shutil.rmtree(run.checkpoints, ignore_errors=True)
    marker.write(parts)
    return run.hf


def benign_finetune(model_dir: Path, cfg, work: Path) -> Path:
    """Finetune ``model_dir`` on ``cfg.data`` (a GSM8K-style chat JSONL) with ``cfg`` (``FinetuneConfig``)."""
    return sft(
        model_dir,
        cfg.data,
        Path(work),
        cfg.trainer_config,
        list(cfg.overrides),
        cfg.timeout_s,
        keep_checkpoints=cfg.keep_checkpoints,
    )
