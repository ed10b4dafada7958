"""Benign finetuning through the trainer's SFT mode (its CLI; evalkit has no training loop of its own)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from evalkit.data import resolve_path
from evalkit.model import subprocess_env
from infra.log import get_logger
from infra.paths import REPO_ROOT

log = get_logger(__name__)


class FinetuneError(RuntimeError):
    pass


def sft(model_dir: Path, data: str | Path, run_dir: Path, trainer_config: str, overrides: list[str],
        timeout_s: float = 3600.0, keep_checkpoints: bool = False) -> Path:
    """``python -m trainer sft --config CFG init.hf=MODEL sft.path=DATA run_dir=DIR export.hf_at_end=true``.

    The finetune is evaluated, not resumed: its checkpoints are written without optimizer state
    (``train.save_optimizer=false``; ``overrides`` may turn it back on) and, unless ``keep_checkpoints``,
    deleted once the HF folder is exported (for a 135M model that is 2.1 GB of checkpoint per finetune).
    Returns ``run_dir/hf`` (an HF Llama folder). Raises ``FinetuneError`` with the trainer's stderr tail.
    """
    data_p = resolve_path(data)
    if not data_p.is_file():
        raise FinetuneError(f"SFT data not found: {data}")
    cfg_p = resolve_path(trainer_config).resolve()
    data_p = data_p.resolve()
    run_dir = Path(run_dir).resolve()
    out = run_dir / "hf"
    if (out / "config.json").is_file():
        log.info("reusing finetuned model %s", out)
        return out
    cmd = [sys.executable, "-m", "trainer", "sft", "--config", str(cfg_p), f"init.hf={Path(model_dir).resolve()}",
           f"sft.path={data_p}", f"run_dir={run_dir}", "export.hf_at_end=true", "train.save_optimizer=false",
           *overrides]
    log.info("finetuning: %s", " ".join(cmd))
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT,
                           env=subprocess_env())
    except subprocess.TimeoutExpired:
        raise FinetuneError(f"trainer sft did not finish in {timeout_s:.0f} s") from None
    (run_dir / "sft.log").write_text(r.stdout + "\n" + r.stderr, encoding="utf-8")
    if r.returncode != 0 or not (out / "config.json").is_file():
        raise FinetuneError(f"trainer sft failed (exit {r.returncode}; log {run_dir / 'sft.log'}): "
                            f"{r.stderr[-1500:]}")
    if not keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return out


def benign_finetune(model_dir: Path, cfg, work: Path) -> Path:
    """Finetune ``model_dir`` on ``cfg.data`` (a GSM8K-style chat JSONL) with ``cfg`` (``FinetuneConfig``)."""
    return sft(model_dir, cfg.data, Path(work), cfg.trainer_config, list(cfg.overrides), cfg.timeout_s,
               keep_checkpoints=cfg.keep_checkpoints)
