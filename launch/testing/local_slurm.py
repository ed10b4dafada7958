"""A real single-host Slurm cluster with fake nodes, for the tests of ``launch`` and for trying jobs locally.

Everything lives under one folder: munge key/socket, ``slurm.conf``, state, spool, logs and PID files.
The daemons are started by hand (no systemd) and stopped by their PID files. Clients find the cluster
through ``SLURM_CONF`` (see :meth:`LocalSlurm.env`); jobs inherit it from the submitting environment.

Layout choices that make one host look like a cluster (measured on Debian 12, Slurm 22.05):

* ``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none``: no cgroups or systemd needed;
* nodes ``n1..nN`` share ``127.0.0.1`` with one ``slurmd -N <name>`` each on its own port, and the node
  names are added to ``/etc/hosts`` so that job scripts can use them as rendezvous hosts;
* ``SlurmdParameters=config_overrides``: nodes may declare more CPUs (and fake GPUs) than the host has;
* ``SchedulerParameters=sched_interval=5`` and a short ``cred_expire`` make requeues take seconds.

Command line (root): ``python -m launch.testing.local_slurm start DIR`` prints ``export SLURM_CONF=...``;
``python -m launch.testing.local_slurm stop DIR``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "sinfo")
HOSTS_MARK = "# local Slurm test nodes (launch/testing/local_slurm.py)"


class LocalSlurmError(RuntimeError):
    """The local cluster could not be started; the message says what failed and where its log is."""


def missing_requirements() -> str | None:
    """Why a local Slurm cannot run here (``None`` when it can)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "the local Slurm needs root (daemons run as root with their own munge key)"
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c) is None]
    if missing:
        return (
            f"Slurm commands not installed: {', '.join(missing)} (run `bash launch/testing/install_slurm.sh` as root)"
        )
    return None


def _free_ports(n: int) -> list[int]:
    """``n`` consecutive free TCP ports (slurm.conf takes a port range for the fake nodes)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return list(range(base, base + n))
    raise LocalSlurmError("no free consecutive ports found")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a daemon that exited but was not reaped yet (its parent is gone) counts as stopped
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class LocalSlurm:
    """A local cluster rooted at ``root``.

    Args:
        root: folder for every file the cluster writes (created).
        nodes: number of fake nodes ``n1..nN``; all are in partition ``debug`` (the default).
        cpus_per_node: CPUs each node declares (may exceed the host's; nothing is pinned).
        gpus_per_node: fake GPUs per node (``Gres=gpu:K`` backed by /dev/tty devices); 0 for none.
        extra_partitions: more partitions, name -> Slurm node list (e.g. ``{"single": "n1"}``).
        partition_options: more ``slurm.conf`` settings of a partition, name -> text (e.g.
            ``{"mem": "DefMemPerCPU=100"}``: jobs there get a default memory per CPU, as on many sites).
    """

    root: Path
    nodes: int = 2
    cpus_per_node: int = 4
    gpus_per_node: int = 0
    extra_partitions: dict[str, str] = field(default_factory=dict)
    partition_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.root = Path(self.root).resolve()
        self.node_names = [f"n{i + 1}" for i in range(self.nodes)]

    # -- paths -------------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    def env(self) -> dict[str, str]:
        """Environment variables that point Slurm clients at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def log(self, name: str) -> Path:
        return self.root / "log" / name

    # -- configuration -----------------------------------------------------------------------
    def write_config(self) -> None:
        for d in ("etc", "munge", "state", "log", "run", *(f"spool/{n}" for n in self.node_names)):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        ctld_port, *node_ports = _free_ports(self.nodes + 1)
        host = socket.gethostname().split(".")[0]
        r = self.root
        nodes = f"n[1-{self.nodes}]" if self.nodes > 1 else "n1"
        ports = f"{node_ports[0]}-{node_ports[-1]}" if self.nodes > 1 else str(node_ports[0])
        gres = f" Gres=gpu:{self.gpus_per_node}" if self.gpus_per_node else ""
        lines = [
            "ClusterName=localtest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire=10",
            f"StateSaveLocation={r}/state",
            f"SlurmdSpoolDir={r}/spool/%n",
            f"SlurmctldPidFile={r}/run/slurmctld.pid",
            f"SlurmdPidFile={r}/run/slurmd-%n.pid",
            f"SlurmctldLogFile={r}/log/slurmctld.log",
            f"SlurmdLogFile={r}/log/slurmd-%n.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=5",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "JobCompType=jobcomp/filetxt",
            f"JobCompLoc={r}/log/jobcomp.txt",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "SlurmdParameters=config_overrides",
            "MinJobAge=600",
            "KillWait=10",
            "InactiveLimit=0",
            "SlurmdTimeout=300",
            "JobRequeue=1",
            *(["GresTypes=gpu"] if self.gpus_per_node else []),
            f"NodeName={nodes} NodeHostname=localhost NodeAddr=127.0.0.1 Port={ports} "
            f"CPUs={self.cpus_per_node} RealMemory=8000{gres} State=UNKNOWN",
            f"PartitionName=debug Nodes={nodes} Default=YES MaxTime=INFINITE State=UP"
            + self._partition_options("debug"),
        ]
        for name, nodelist in self.extra_partitions.items():
            options = self._partition_options(name)
            lines.append(f"PartitionName={name} Nodes={nodelist} MaxTime=INFINITE State=UP{options}")
        self.conf.write_text("\n".join(lines) + "\n")
        if self.gpus_per_node:
            # Any existing character devices do: Slurm only needs files to hand out as "GPUs".
            devs = f"/dev/tty[{10}-{10 + self.gpus_per_node - 1}]"
            (self.root / "etc" / "gres.conf").write_text(f"NodeName={nodes} Name=gpu File={devs}\n")

    def _partition_options(self, name: str) -> str:
        text = self.partition_options.get(name, "").strip()
        return f" {text}" if text else ""

    def _ensure_hosts(self) -> None:
        hosts = Path("/etc/hosts")
        text = hosts.read_text()
        known = set()
        for line in text.splitlines():
            parts = line.split("#")[0].split()
            known.update(parts[1:])
        missing = [n for n in self.node_names if n not in known]
        if missing:
            try:
                with hosts.open("a") as f:
                    f.write(f"127.0.0.1 {' '.join(missing)} {HOSTS_MARK}\n")
            except OSError as e:
                raise LocalSlurmError(
                    f"cannot add the node names {missing} to /etc/hosts ({e}); jobs use them as rendezvous hosts"
                ) from None

    # -- life cycle --------------------------------------------------------------------------
    def _run(self, cmd: list[str], log_name: str) -> None:
        env = {**os.environ, **self.env()}
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            raise LocalSlurmError(
                f"`{' '.join(cmd)}` failed ({res.returncode}): {res.stderr.strip()} (log: {self.log(log_name)})"
            )

    def start(self, timeout: float = 60.0) -> LocalSlurm:
        """Write the configuration, start munged, slurmctld and one slurmd per node; wait until idle."""
        why = missing_requirements()
        if why:
            raise LocalSlurmError(why)
        self.write_config()
        self._ensure_hosts()
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o600)
        self._run(
            [
                "munged",
                "--force",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.root}/run/munged.pid",
                f"--log-file={self.log('munged.log')}",
                f"--seed-file={self.root}/munge/munged.seed",
            ],
            "munged.log",
        )
        self._run(["slurmctld", "-c", "-f", str(self.conf)], "slurmctld.log")
        for n in self.node_names:
            self._run(["slurmd", "-N", n, "-f", str(self.conf)], f"slurmd-{n}.log")
        self.wait_idle(timeout)
        return self

    def sinfo_states(self) -> dict[str, str]:
        env = {**os.environ, **self.env()}
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=env, capture_output=True, text=True, timeout=30)
        states = {}
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def wait_idle(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.sinfo_states()
            if states and all(states.get(n) == "idle" for n in self.node_names):
                return
            time.sleep(0.5)
        raise LocalSlurmError(f"nodes not idle after {timeout:.0f} s: {states} (logs: {self.root / 'log'})")

    def _pid(self, name: str) -> int | None:
        p = self.root / "run" / f"{name}.pid"
        try:
            return int(p.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 20.0) -> None:
        """Cancel the cluster's jobs, then stop slurmd, slurmctld and munged by their PID files."""
        env = {**os.environ, **self.env()}
        if self.conf.exists() and self._pid("slurmctld"):
            subprocess.run(["scancel", "--full", "--state=RUNNING"], env=env, capture_output=True, timeout=30)
            subprocess.run(["scancel", "--full", "--state=PENDING"], env=env, capture_output=True, timeout=30)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                res = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=30)
                if res.returncode != 0 or not res.stdout.strip():
                    break
                time.sleep(0.5)
        # node daemons together, then the controller, then munge (the others authenticate through it)
        for group in ([f"slurmd-{n}" for n in self.node_names], ["slurmctld"], ["munged"]):
            pids = [p for p in (self._pid(name) for name in group) if p is not None]
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            alive = list(pids)
            while alive and time.monotonic() < deadline:
                time.sleep(0.1)
                alive = [p for p in alive if _alive(p)]
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> LocalSlurm:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m launch.testing.local_slurm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("root", help="folder for the cluster's files")
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--cpus-per-node", type=int, default=4)
    p.add_argument("--gpus-per-node", type=int, default=0)
    args = p.parse_args(argv)
    cluster = LocalSlurm(
        Path(args.root), nodes=args.nodes, cpus_per_node=args.cpus_per_node, gpus_per_node=args.gpus_per_node
    )
    if args.action == "start":
        try:
            cluster.start()
        except LocalSlurmError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
