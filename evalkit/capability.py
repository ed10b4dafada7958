"""Capability suite: lm-eval-harness on the loaded model (ARC, MMLU, ... when their datasets are
reachable; evalkit's offline task folder otherwise)."""

from __future__ import annotations

from pathlib import Path

from infra.log import get_logger

log = get_logger(__name__)

TASK_DIR = Path(__file__).resolve().parent / "tasks"


def materialise_tasks(src: Path, dst: Path) -> Path:
    """Copy task YAMLs and data to ``dst``, writing absolute data paths (lm-eval resolves
    ``data_files`` against the working directory)."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".yaml", ".yml"):
            (dst / f.name).write_text(f.read_text(encoding="utf-8").replace("@TASK_DIR@", str(dst)), encoding="utf-8")
        elif f.is_file():
            shutil.copy(f, dst / f.name)
    return dst


def run_lm_eval(model, cfg, work: Path) -> dict:
    """Run ``cfg.tasks`` with lm-eval on an ``HFModel``; returns {tasks: {task: {metric: value}}, ...}.

    Args:
        model: ``evalkit.model.HFModel`` (its loaded weights are evaluated, steering hooks included).
        cfg: ``CapabilityConfig``. work: folder for materialised local tasks.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise RuntimeError(f"the capability suite needs lm-eval (pip install lm-eval): {e}") from None
    include = [materialise_tasks(TASK_DIR, work / "tasks")]
    if cfg.include_path:
        include.append(Path(cfg.include_path).resolve())
    local = {p.stem for d in include for p in Path(d).glob("*.y*ml")}
    # indexing lm-eval's ~10k built-in task files takes a while: only when a task needs it
    tm = TaskManager(include_path=[str(p) for p in include], include_defaults=any(t not in local for t in cfg.tasks))
    lm = HFLM(pretrained=model.model, tokenizer=model.tok, batch_size=cfg.batch_size, device=model.device)
    res = lm_eval.simple_evaluate(
        model=lm,
        tasks=list(cfg.tasks),
        task_manager=tm,
        num_fewshot=cfg.num_fewshot,
        limit=cfg.limit or None,
        bootstrap_iters=0,
        log_samples=False,
    )
    tasks = {}
    for task, metrics in res["results"].items():
        tasks[task] = {
            k.split(",")[0]: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and "stderr" not in k
        }
    accs = [v["acc"] for v in tasks.values() if "acc" in v]
    return {
        "tasks": tasks,
        "mean_acc": sum(accs) / len(accs) if accs else float("nan"),
        "num_fewshot": cfg.num_fewshot,
        "limit": cfg.limit,
    }
