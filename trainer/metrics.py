"""Per-step metrics: ``run_dir/metrics.jsonl`` always, TensorBoard by default, W&B optionally.

One JSON object per optimizer step: ``step``, ``tokens`` (cumulative), ``loss``, ``lr``,
``grad_norm``, ``tokens_per_s``, ``mfu`` (GPU only, else null), ``phase``, ``bucket_samples``
(samples per bucket in this step's global batch), ``bucket_tokens`` (cumulative tokens per bucket)
and, on the steps that ran validation only, ``val_loss`` (mean per-token loss on each bucket's
held-out samples). On resume lines after the checkpoint's step are dropped first, so the file never
holds a step twice.

TensorBoard / W&B scalars: ``train/<key>`` for the numbers, ``train/bucket_tokens/<bucket>`` and
``val_loss/<bucket>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from infra.folders import RunFolder
from infra.log import get_logger

log = get_logger(__name__)


class MetricsWriter:
    """Writes metrics on rank 0 only (other ranks get a no-op writer).

    Args:
        run_dir: the run folder.
        enabled: False on ranks other than 0.
        resume_step: drop lines with ``step > resume_step`` (0 when starting fresh: truncate).
        tensorboard: also write TensorBoard scalars to ``run_dir/tensorboard``.
        wandb: also log to W&B (``project``/``name``, config dict for the run).
    """

    def __init__(
        self,
        run_dir: str | Path,
        enabled: bool,
        resume_step: int = 0,
        tensorboard: bool = True,
        wandb: bool = False,
        project: str = "",
        name: str | None = None,
        config: dict | None = None,
    ):
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        if not enabled:
            return
        folder = RunFolder(run_dir)
        self.path = folder.metrics
        self._truncate_after(resume_step)
        self._f = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(folder.tensorboard), purge_step=resume_step + 1)
        if wandb:
            try:
                import wandb as wb
            except ImportError as e:
                raise RuntimeError("logging.wandb=true needs the wandb package: pip install wandb") from e
            self._wandb = wb.init(
                project=project,
                name=name,
                config=config,
                dir=str(run_dir),
                resume="allow",
                id=(Path(run_dir).resolve().name if name is None else name),
            )

    def _truncate_after(self, step: int) -> None:
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        self.path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        step = record["step"]
        scalars = {
            f"train/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step" and v is not None
        }
        for b, v in (record.get("bucket_tokens") or {}).items():
            scalars[f"train/bucket_tokens/{b}"] = v
        for b, v in (record.get("val_loss") or {}).items():
            scalars[f"val_loss/{b}"] = v
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
