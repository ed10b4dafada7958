"""Runs one LLM transformation over documents with datatrove's ``InferenceRunner``.

What comes from datatrove: the async document loop, the per-chunk checkpoints and the sqlite request
cache (a killed run resumes without resending finished requests and without duplicates), the
executor's completion markers and stats. What is ours, and why:

* ``ClientEndpointServer`` (a datatrove server backend): requests go through ``infra.inference.ChatClient``
  (timeouts; bounded retries with a configurable backoff) and a spent retry budget becomes datatrove's
  ``ServerError``, which ends the task at once. datatrove's own endpoint backend retries connection
  errors six times with a fixed 5 s * 2^n backoff (over five minutes) per request, and never checks the
  server's health; ours polls ``/v1/models`` and fails all waiting requests once the server is gone.
* ``run_transformation`` checks documents in against documents out: datatrove logs "Failed to save
  document" and still marks the task complete when its writer fails (e.g. ``aiofiles`` missing); that
  loss becomes an ``LLMStageError`` here, and the completion marker is removed so a re-run redoes it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.inference import ChatClient, EndpointUnavailable, RequestRejected
from infra.log import get_logger

log = get_logger(__name__)


class LLMStageError(RuntimeError):
    """The LLM stage could not finish; the message says which transformation and how far it got."""


@dataclass
class Endpoint:
    """A reachable OpenAI-compatible server: root URL (no /v1), model name, client settings."""

    root_url: str
    model: str
    api_key: str = ""
    max_concurrency: int = 16
    request_timeout: float = 600.0
    max_retries: int = 3
    retry_backoff: float = 2.0
    health_interval: float = 5.0

    def client(self) -> ChatClient:
        return ChatClient(
            self.root_url,
            self.model,
            max_concurrency=self.max_concurrency,
            timeout=self.request_timeout,
            max_retries=self.max_retries,
            backoff=self.retry_backoff,
            api_key=self.api_key or None,
        )


def _server_backend():
    """Build the datatrove backend class lazily (datatrove's inference module imports loguru/httpx)."""
    from datatrove.pipeline.inference.servers.base import InferenceServer
    from datatrove.pipeline.inference.types import InferenceError, ServerError

    class ClientEndpointServer(InferenceServer):
        """datatrove server backend for an already running endpoint, talking through ``ChatClient``."""

        def __init__(self, config, rank: int, endpoint: Endpoint):
            super().__init__(config, rank)
            self.endpoint = endpoint
            self.client = endpoint.client()

        async def start_server(self):
            return None  # the endpoint is started (or given) by the stage, not per task

        def get_base_url(self) -> str:
            return self.endpoint.root_url.rstrip("/")

        async def _wait_until_ready(self, max_attempts: int = 10, delay_sec: float = 1.0) -> None:
            await super()._wait_until_ready(max_attempts=max_attempts, delay_sec=delay_sec)

        async def monitor_health(self) -> None:
            failures = 0
            while True:
                await asyncio.sleep(self.endpoint.health_interval)
                if await self.is_ready():
                    failures = 0
                    continue
                failures += 1
                if failures >= 3:
                    raise ServerError(f"endpoint {self.get_base_url()} stopped answering /v1/models")

        async def _make_request(self, payload: dict) -> dict:
            try:
                return await self.client.post_chat(payload)
            except EndpointUnavailable as e:
                raise ServerError(str(e)) from e
            except RequestRejected as e:
                # the "BadRequestError" marker lets datatrove cache the rejection and not resend it
                raise InferenceError(None, f"BadRequestError: {e}", payload=payload) from e

        async def server_cleanup(self) -> None:
            await super().server_cleanup()
            await self.client.aclose()

    return ClientEndpointServer


def _runner_class():
    from datatrove.pipeline.inference.run_inference import InferenceRunner

    class EndpointInferenceRunner(InferenceRunner):
        """``InferenceRunner`` whose server is our ``ClientEndpointServer``."""

        def __init__(self, *args, endpoint: Endpoint, **kwargs):
            super().__init__(*args, **kwargs)
            self.endpoint = endpoint

        def _init_server(self, rank: int):
            return _server_backend()(self.config, rank, self.endpoint)

    return EndpointInferenceRunner


def read_outputs(out_dir: Path) -> dict[str, dict]:
    """Documents written by a transformation, by id (a repeated id keeps the last line)."""
    docs: dict[str, dict] = {}
    for f in sorted(Path(out_dir).glob("*.jsonl")):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    docs[str(rec["id"])] = rec
    return docs


def count_output_lines(out_dir: Path) -> int:
    n = 0
    for f in Path(out_dir).glob("*.jsonl"):
        with open(f, encoding="utf-8") as fh:
            n += sum(1 for line in fh if line.strip())
    return n


def run_transformation(
    name: str,
    source,
    n_in: int,
    rollout: Callable,
    endpoint: Endpoint,
    work_dir: Path,
    shared_context=None,
    records_per_chunk: int = 500,
    metadata_key: str = "llm",
) -> dict[str, dict]:
    """Run ``rollout`` over the documents of ``source`` with datatrove; return the output documents by id.

    Args:
        name: transformation name (folder under ``work_dir`` and in messages).
        source: a datatrove reader step or a list of ``Document``.
        n_in: documents ``source`` yields, to check nothing was lost.
        rollout: ``async rollout(doc, generate, **shared_context) -> dict``.
        endpoint: the server to use.
        work_dir: gets ``<name>/out`` (JSONL results), ``<name>/checkpoints``, ``<name>/logs``.
        shared_context: datatrove shared context (dict or callable returning one) passed to ``rollout``.
        records_per_chunk: documents per checkpoint chunk.
        metadata_key: where the rollout result lands in each document's metadata.
    Raises:
        LLMStageError: the task failed (server gone, ...) or lost documents.
    """
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.inference.run_inference import InferenceConfig
    from datatrove.pipeline.writers import JsonlWriter

    base = Path(work_dir) / name
    out_dir, ckpt_dir, logs_dir = base / "out", base / "checkpoints", base / "logs"
    config = InferenceConfig(
        server_type="endpoint",
        model_name_or_path=endpoint.model,
        endpoint_url=endpoint.root_url,
        max_concurrent_generations=endpoint.max_concurrency,
        request_timeout=endpoint.request_timeout,
        metric_interval=3600,
        server_ready_max_attempts=10,
        server_ready_delay_sec=1.0,
        server_start_max_retries=0,
    )
    runner = _runner_class()(
        rollout_fn=rollout,
        config=config,
        endpoint=endpoint,
        output_writer=JsonlWriter(str(out_dir), output_filename="${rank}_chunk_${chunk_index}.jsonl", compression=None),
        checkpoints_local_dir=str(ckpt_dir),
        records_per_chunk=records_per_chunk,
        shared_context=shared_context,
        metadata_key=metadata_key,
    )
    executor = LocalPipelineExecutor(
        pipeline=[source, runner], tasks=1, workers=1, logging_dir=str(logs_dir), skip_completed=True
    )
    if n_in == 0:
        return {}
    try:
        executor.run()
    except Exception as e:  # noqa: BLE001 - datatrove re-raises whatever the task raised
        done = len(set(read_outputs(out_dir)) | _checkpointed_ids(ckpt_dir))
        raise LLMStageError(
            f"LLM transformation '{name}' failed after {done} of {n_in} documents "
            f"({type(e).__name__}: {e}); re-run the same command to finish the rest "
            f"(finished documents and requests are not redone)"
        ) from e
    docs = read_outputs(out_dir)
    lines = count_output_lines(out_dir)
    if len(docs) != n_in or lines != n_in:
        # datatrove's checkpoints count the lost documents as done: set the task's state aside (kept
        # for inspection) and drop the completion marker, so that a re-run redoes the whole task
        aside = base / f"lost-{time.strftime('%Y%m%d-%H%M%S')}"
        aside.mkdir(parents=True, exist_ok=True)
        for d in (out_dir, ckpt_dir):
            if d.exists():
                shutil.move(str(d), str(aside / d.name))
        (logs_dir / "completions" / "00000").unlink(missing_ok=True)
        raise LLMStageError(
            f"LLM transformation '{name}': {n_in} documents in, {len(docs)} distinct documents out "
            f"({lines} lines): {n_in - len(docs)} lost. datatrove marks such a task complete after logging "
            f"'Failed to save document' (is 'aiofiles' installed? see {logs_dir}/logs); its outputs were "
            f"moved to {aside} so that a re-run redoes it"
        )
    return docs


def _checkpointed_ids(ckpt_dir: Path) -> set[str]:
    """Ids of documents datatrove saved in its per-chunk checkpoint copies."""
    ids = set()
    for f in Path(ckpt_dir).rglob("*.jsonl"):
        with open(f, encoding="utf-8") as fh:
            for line in fh:
                try:
                    ids.add(str(json.loads(line)["id"]))
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by the crash
    return ids
