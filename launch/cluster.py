"""What the cluster offers, and the checks every job passes before anything is submitted.

Partitions come from Slurm (``scontrol show partition``, ``sinfo``) when it answers, otherwise from the
config's ``cluster.partitions`` description. A request that cannot run (unknown partition, more nodes,
CPUs or GPUs per node than the partition has, a time above its limit, a container image that is not
there or a cluster without pyxis) is refused with a message naming the job and the setting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from infra.log import get_logger
from launch.config import ClusterConfig, EnvironmentConfig, Resources, parse_time_minutes

log = get_logger(__name__)


class LaunchError(RuntimeError):
    """A job that cannot be submitted; nothing was submitted when this is raised by a check."""


@dataclass
class NodeInfo:
    name: str
    cpus: int
    gpus: int


@dataclass
class PartitionInfo:
    name: str
    total_nodes: int
    max_nodes: int | None = None  # per job; None: unlimited
    max_time_min: float = float("inf")
    state: str = "UP"
    nodes: list[NodeInfo] = field(default_factory=list)  # empty when described by the config
    cpus_per_node: int | None = None  # config description (None: unknown)
    gpus_per_node: int | None = None


@dataclass
class ClusterInfo:
    source: str  # "slurm" or "config"
    partitions: dict[str, PartitionInfo]
    default_partition: str | None = None
    pyxis: bool | None = None  # None: unknown


def _run(cmd: list[str], timeout: float = 30) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def _gpu_count(gres: str) -> int:
    """GPUs in a sinfo ``%G`` field such as ``gpu:8``, ``gpu:h100:8(S:0-1)`` or ``(null)``."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"^gpu(?::[^:(]+)?:(\d+)", item.strip())
        if m:
            total += int(m.group(1))
    return total


def query_slurm() -> ClusterInfo | None:
    """Ask the running Slurm for its partitions; ``None`` when no Slurm answers."""
    out = _run(["scontrol", "show", "partition", "--oneliner"])
    if out is None:
        return None
    parts: dict[str, PartitionInfo] = {}
    default = None
    for line in out.splitlines():
        kv = dict(re.findall(r"(\S+?)=(\S*)", line))
        name = kv.get("PartitionName")
        if not name:
            continue
        max_nodes = kv.get("MaxNodes", "UNLIMITED")
        try:
            max_time = parse_time_minutes(kv.get("MaxTime", "UNLIMITED"))
        except ValueError:
            max_time = float("inf")
        parts[name] = PartitionInfo(
            name=name,
            total_nodes=int(kv.get("TotalNodes", "0") or 0),
            max_nodes=None if max_nodes == "UNLIMITED" else int(max_nodes),
            max_time_min=max_time,
            state=kv.get("State", "UP"),
        )
        if kv.get("Default") == "YES":
            default = name
    nodes_out = _run(["sinfo", "-h", "-N", "-o", "%N|%P|%c|%G"]) or ""
    for line in nodes_out.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        node, part, cpus, gres = fields
        part = part.rstrip("*")
        if part in parts:
            parts[part].nodes.append(NodeInfo(node, int(cpus) if cpus.isdigit() else 0, _gpu_count(gres)))
    help_out = _run(["srun", "--help"]) or ""
    return ClusterInfo("slurm", parts, default, pyxis="--container-image" in help_out)


def from_config(cfg: ClusterConfig) -> ClusterInfo:
    parts = {}
    for name, p in cfg.partitions.items():
        try:
            max_time = parse_time_minutes(p.max_time)
        except ValueError:
            raise LaunchError(f"cluster.partitions.{name}.max_time: not a Slurm time: {p.max_time!r}") from None
        parts[name] = PartitionInfo(
            name=name,
            total_nodes=p.nodes or 0,
            max_time_min=max_time,
            cpus_per_node=p.cpus_per_node,
            gpus_per_node=p.gpus_per_node,
        )
    return ClusterInfo("config", parts, cfg.default_partition, pyxis=None)


def cluster_info(cfg: ClusterConfig) -> ClusterInfo | None:
    """Partitions to check against, following ``cluster.query``; ``None`` when nothing describes them."""
    if cfg.query in ("auto", "slurm"):
        info = query_slurm()
        if info is not None:
            return info
        if cfg.query == "slurm":
            raise LaunchError(
                "cluster.query is 'slurm' but `scontrol show partition` does not answer here "
                "(run on a login node, or set cluster.query=config)"
            )
    if cfg.partitions:
        return from_config(cfg)
    return None


SQUASHFS_SUFFIXES = (".sqsh", ".squashfs", ".sqfs")
# [USER@][REGISTRY[:PORT]#]IMAGE[:TAG][@sha256:DIGEST], the forms pyxis passes to `enroot import`
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REF = re.compile(
    rf"^(?:[^@#/\s]+@)?(?:[A-Za-z0-9.-]+(?::[0-9]+)?#)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)
_NOT_IMAGE_SUFFIXES = (".md", ".txt", ".yaml", ".yml", ".json", ".py", ".sh", ".toml", ".cfg", ".tar", ".gz", ".zip")


def looks_like_path(image: str) -> bool:
    """pyxis takes a squashfs file or a registry reference (``nvcr.io#nvidia/pytorch:24.05-py3``)."""
    return image.startswith(("/", "./", "../", "~")) or image.lower().endswith((*SQUASHFS_SUFFIXES, ".sif"))


def is_squashfs(path: Path) -> bool:
    """A squashfs file starts with the magic ``hsqs`` (little-endian 0x73717368)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"hsqs"
    except OSError:
        return False


def check_container_image(img: str, workdir: Path) -> list[str]:
    """Problems with ``environment.container_image``: a file that is not there or is no squashfs image,
    or a value that is neither a file nor a registry reference (``README.md``)."""
    key = "environment.container_image"
    if looks_like_path(img):
        p = Path(img).expanduser()
        if not p.is_absolute():
            p = workdir / p
        if img.lower().endswith(".sif"):
            return [
                f"{key}: {img} is an Apptainer/Singularity image; pyxis runs squashfs images made by enroot "
                "(containers/build_sqsh.sh)"
            ]
        if not p.is_file():
            return [
                f"{key}: image file {p} does not exist (build it with containers/build_sqsh.sh or "
                "`enroot import`, or give a registry reference such as nvcr.io#nvidia/pytorch:25.06-py3)"
            ]
        if not is_squashfs(p):
            return [f"{key}: {p} is not a squashfs image (no 'hsqs' magic); build one with containers/build_sqsh.sh"]
        return []
    local = [c for c in (workdir / img, Path(img)) if c.is_file()]
    if local and not is_squashfs(local[0]):
        return [
            f"{key}: {img!r} names the file {local[0].resolve()}, which is not a squashfs image; give a "
            "squashfs file (/path/image.sqsh) or a registry reference (nvcr.io#nvidia/pytorch:25.06-py3)"
        ]
    if local:
        return [f"{key}: {img!r} is a squashfs file; give it as a path (./{img} or an absolute path)"]
    if not _IMAGE_REF.match(img) or img.lower().endswith(_NOT_IMAGE_SUFFIXES):
        return [
            f"{key}: {img!r} is neither a squashfs file (/path/image.sqsh) nor a registry reference "
            "([USER@][REGISTRY#]IMAGE[:TAG], e.g. nvcr.io#nvidia/pytorch:25.06-py3)"
        ]
    return []


def check_environment(env: EnvironmentConfig, info: ClusterInfo | None, workdir: Path) -> list[str]:
    errors = []
    if env.container_image:
        errors += check_container_image(env.container_image, workdir)
        if info is not None and info.pyxis is False:
            errors.append(
                "environment.container_image is set but this Slurm has no pyxis plugin "
                "(`srun --help` lists no --container-image); unset it or use environment.venv"
            )
    elif env.venv:
        p = Path(env.venv).expanduser()
        p = p if p.is_absolute() else workdir / p
        if not (p / "bin" / "activate").is_file():
            errors.append(
                f"environment.venv: {p}/bin/activate not found (run scripts/setup.sh there, "
                "or set environment.venv=null to use the Python on PATH)"
            )
    return errors


def check_resources(job: str, res: Resources, info: ClusterInfo | None, ntasks_per_node: int = 1) -> list[str]:
    """Problems with one job's request (empty when it fits or nothing describes the cluster)."""
    if info is None:
        return []
    errors = []
    part_name = res.partition or info.default_partition
    if part_name is None:
        return [
            f"{job}: no partition given and the cluster has no default partition "
            f"(known: {', '.join(sorted(info.partitions)) or 'none'})"
        ]
    part = info.partitions.get(part_name)
    if part is None:
        return [
            f"{job}: unknown partition {part_name!r} (known on this cluster ({info.source}): "
            f"{', '.join(sorted(info.partitions)) or 'none'})"
        ]
    if part.state.upper() not in ("UP",):
        log.warning("%s: partition %s is %s; the job will wait", job, part_name, part.state)
    if part.total_nodes and res.nodes > part.total_nodes:
        errors.append(f"{job}: asks for {res.nodes} nodes but partition {part_name!r} has {part.total_nodes}")
    if part.max_nodes is not None and res.nodes > part.max_nodes:
        errors.append(f"{job}: asks for {res.nodes} nodes but partition {part_name!r} allows {part.max_nodes} per job")
    limit = parse_time_minutes(res.time)
    if limit > part.max_time_min:
        errors.append(f"{job}: time {res.time} is above partition {part_name!r}'s limit ({part.max_time_min:.0f} min)")
    cpus = res.cpus_per_task * ntasks_per_node
    if part.nodes:
        fit = [n for n in part.nodes if n.cpus >= cpus and n.gpus >= res.gpus_per_node]
        if len(fit) < res.nodes:
            most_gpus = max((n.gpus for n in part.nodes), default=0)
            most_cpus = max((n.cpus for n in part.nodes), default=0)
            errors.append(
                f"{job}: needs {res.nodes} node(s) with {cpus} CPUs and {res.gpus_per_node} GPUs "
                f"each; partition {part_name!r} has {len(fit)} such node(s) (at most "
                f"{most_cpus} CPUs and {most_gpus} GPUs per node)"
            )
    else:
        if part.cpus_per_node is not None and cpus > part.cpus_per_node:
            errors.append(f"{job}: asks for {cpus} CPUs per node but partition {part_name!r} has {part.cpus_per_node}")
        if part.gpus_per_node is not None and res.gpus_per_node > part.gpus_per_node:
            errors.append(
                f"{job}: asks for {res.gpus_per_node} GPUs per node but partition {part_name!r} "
                f"has {part.gpus_per_node}"
            )
    return errors
