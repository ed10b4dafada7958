"""A launch plan: the jobs of one command, their scripts and ``afterok`` dependencies; writing,
printing (``--dry-run``) and submitting it, and the ``jobs.json`` record of what was submitted."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from infra.log import get_logger
from launch.cluster import LaunchError
from launch.config import Resources

log = get_logger(__name__)


@dataclass
class JobSpec:
    """One Slurm job of a plan.

    Args:
        key: short unique name within the launch (``train-p20``); names the script and log folder.
        name: the Slurm job name.
        script: the batch script text.
        after: keys of jobs that must end successfully first (``--dependency=afterok``).
        resources: what the job asks for (for the checks).
        ntasks_per_node: tasks per node the job asks for.
        array_size: number of array elements, or None for a plain job.
        info: facts to record beside the job id (run folder, results folder, ...).
        inputs: ``(label, path, kind)`` of what the job reads (``kind``: ``corpus``, a folder with
            ``manifest.json``, ``path``, or ``beside``: a path that a job of the plan writes while this
            one runs); each must exist or be written by a job it waits for (``beside``: by any job of the plan).
        outputs: folders the job writes (recorded in ``jobs.json``, so that a later launch ``--after``
            this job may read them).
        in_container: the job's steps run in the configured container (the corpus driver of
            ``executor: slurm`` runs on the host: its paths need no mount).
    """

    key: str
    name: str
    script: str
    after: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    ntasks_per_node: int = 1
    array_size: int | None = None
    info: dict = field(default_factory=dict)
    inputs: list[tuple[str, str, str]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    in_container: bool = True


@dataclass
class Plan:
    command: str
    launch_dir: Path
    jobs: list[JobSpec] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # extra files to write (relative path -> text)
    external_after: list[str] = field(default_factory=list)  # job ids the plan's first jobs wait for
    warnings: list[str] = field(default_factory=list)  # shown by the dry run and logged at submission

    def add(self, job: JobSpec) -> JobSpec:
        if any(j.key == job.key for j in self.jobs):
            raise LaunchError(f"two jobs named {job.key!r} in one launch")
        known = {j.key for j in self.jobs}
        for dep in job.after:
            if dep not in known:
                raise LaunchError(f"job {job.key!r} depends on {dep!r}, which is not planned before it")
        self.jobs.append(job)
        return job

    def script_path(self, job: JobSpec) -> Path:
        return self.launch_dir / "scripts" / f"{job.key}.sbatch"

    def log_dir(self, key: str) -> Path:
        return self.launch_dir / "logs" / key

    def write(self) -> None:
        """Write scripts, extra files and the log folders (Slurm does not create missing folders)."""
        for rel, text in self.files.items():
            p = self.launch_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        for job in self.jobs:
            p = self.script_path(job)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(job.script)
            os.chmod(p, 0o755)
            self.log_dir(job.key).mkdir(parents=True, exist_ok=True)

    def sbatch_args(self, job: JobSpec, ids: dict[str, str]) -> list[str]:
        args = ["sbatch", "--parsable"]
        deps = [ids[k] for k in job.after] if job.after else list(self.external_after)
        if deps:
            args += [f"--dependency=afterok:{':'.join(deps)}", "--kill-on-invalid-dep=yes"]
        return args + [str(self.script_path(job))]

    def dry_run_text(self) -> str:
        """Every script, then the submission commands in order (dependencies as ``<key>`` placeholders)."""
        out = []
        if self.warnings:
            out += ["##### warnings", *(f"# warning: {w}" for w in self.warnings), ""]
        for rel, text in self.files.items():
            out += [f"##### {self.launch_dir / rel}", text.rstrip(), ""]
        for job in self.jobs:
            out += [f"##### {self.script_path(job)}", job.script.rstrip(), ""]
        out.append("##### submission order")
        placeholders = {j.key: f"<{j.key}>" for j in self.jobs}
        for job in self.jobs:
            out.append(" ".join(self.sbatch_args(job, placeholders)))
        return "\n".join(out) + "\n"

    def submit(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """Submit in order; returns key -> job id and appends the submission to ``jobs.json``.

        If one submission fails, the jobs already submitted by this plan are cancelled (so that no
        half graph runs), the record says so, and ``LaunchError`` is raised.
        """
        for w in self.warnings:
            log.warning("%s", w)
        self.write()
        ids: dict[str, str] = {}
        records = []
        for job in self.jobs:
            args = self.sbatch_args(job, ids)
            res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
            if res.returncode != 0:
                if ids:
                    subprocess.run(["scancel", *ids.values()], capture_output=True, env=env, timeout=60)
                self._record(records, status=f"failed at {job.key}; cancelled {sorted(ids.values())}")
                raise LaunchError(
                    f"sbatch failed for job {job.key!r} ({shlex.join(args)}): "
                    f"{res.stderr.strip() or res.stdout.strip()}"
                    + (f"; cancelled the jobs already submitted: {', '.join(ids.values())}" if ids else "")
                )
            job_id = res.stdout.strip().split(";")[0]
            ids[job.key] = job_id
            records.append(
                {
                    "key": job.key,
                    "name": job.name,
                    "job_id": job_id,
                    "script": str(self.script_path(job)),
                    "log_dir": str(self.log_dir(job.key)),
                    "after": job.after,
                    "after_ids": [ids[k] for k in job.after] if job.after else list(self.external_after),
                    "array_size": job.array_size,
                    "outputs": job.outputs,
                    **({"info": job.info} if job.info else {}),
                }
            )
            log.info(
                "submitted %s as job %s%s",
                job.key,
                job_id,
                f" after {', '.join(ids[k] for k in job.after)}" if job.after else "",
            )
        self._record(records, status="submitted")
        return ids

    def _record(self, records: list[dict], status: str) -> None:
        path = self.launch_dir / "jobs.json"
        data = {"submissions": []}
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                path.rename(path.with_suffix(".json.corrupt"))
        data.setdefault("submissions", []).append(
            {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "command": self.command,
                "status": status,
                "jobs": records,
            }
        )
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)


def load_jobs(launch_dir: str | Path) -> dict:
    """The ``jobs.json`` of a launch folder."""
    path = Path(launch_dir) / "jobs.json"
    if not path.is_file():
        raise LaunchError(f"{launch_dir}: no jobs.json (nothing was submitted from this launch folder)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LaunchError(f"{path}: not valid JSON: {e}") from None


FINAL_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
}


def _scontrol_states(jid: str, env: dict[str, str] | None) -> dict[str, dict] | None:
    """States from ``scontrol show job`` (array elements as ``<id>_<index>``); None when it does not know the job."""
    try:
        res = subprocess.run(
            ["scontrol", "show", "job", "--oneliner", jid], capture_output=True, text=True, env=env, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0 or not res.stdout.strip():
        return None
    out: dict[str, dict] = {}
    for line in res.stdout.splitlines():
        kv = dict(item.split("=", 1) for item in line.split() if "=" in item)
        key = kv.get("JobId", jid)
        if kv.get("ArrayTaskId") and kv.get("ArrayJobId"):
            key = f"{kv['ArrayJobId']}_{kv['ArrayTaskId']}"
        out[key] = {
            "state": kv.get("JobState", "UNKNOWN"),
            "exit_code": kv.get("ExitCode"),
            "restarts": int(kv.get("Restarts", "0") or 0),
            "reason": kv.get("Reason"),
            "dependency": kv.get("Dependency"),
            "source": "scontrol",
        }
    return out


def _sacct_states(jid: str, env: dict[str, str] | None) -> tuple[dict[str, dict], str]:
    """States from ``sacct`` (accounting), or ``sacct -c`` (job completion records) where accounting storage
    is off; returns the states and, when neither answers, why."""
    why = ""
    for flags in (["-X"], ["-c"]):
        cmd = ["sacct", *flags, "-n", "-P", "-o", "JobID,State,ExitCode", "-j", jid]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return {}, f"sacct: {e}"
        if res.returncode != 0:
            why = res.stderr.strip() or f"sacct exited {res.returncode}"
            continue
        out: dict[str, dict] = {}
        for line in res.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) < 3 or "." in fields[0] or not fields[0]:
                continue  # job steps (.batch, .extern, .0) are not jobs
            state = fields[1].split()[0] if fields[1] else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
            out[fields[0]] = {"state": state, "exit_code": fields[2], "source": "sacct"}
        if out:
            return out, ""
        why = why or "sacct has no record of it"
    return {}, why


def job_states(job_ids: list[str], env: dict[str, str] | None = None) -> dict[str, dict]:
    """State and exit code per job id (array elements as ``<id>_<index>``): ``scontrol show job`` while
    the controller still knows the job, else ``sacct`` (finished jobs are forgotten by the controller
    after ``MinJobAge``); ``UNKNOWN`` with the reason when neither knows it."""
    out: dict[str, dict] = {}
    for jid in job_ids:
        found = _scontrol_states(jid, env)
        if found is None:
            found, why = _sacct_states(jid, env)
            if not found:
                found = {jid: {"state": "UNKNOWN", "error": f"neither scontrol nor sacct knows job {jid}: {why}"}}
        out.update(found)
    return out
