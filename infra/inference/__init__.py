"""Inference servers (vLLM, OpenAI-compatible) and the client shared by datagen and evalkit.

* ``VLLMServer``: start a vLLM server from its own virtualenv on 127.0.0.1, wait for health, stop by PID.
* ``ChatClient``: async/sync chat client with bounded concurrency, timeouts, retries with backoff.
* ``ResponseCache``: resumable JSONL of request/response pairs for the batch helpers.
"""

from infra.inference.client import (
    ChatClient,
    ChatRequest,
    ChatResult,
    EndpointUnavailable,
    RequestRejected,
    ResponseCache,
    normalize_base_url,
    request_key,
    wait_for_endpoint,
)
from infra.inference.server import InferenceServerError, VLLMServer, find_free_port, port_is_free, wait_healthy

__all__ = [
    "VLLMServer",
    "InferenceServerError",
    "ChatClient",
    "ChatRequest",
    "ChatResult",
    "ResponseCache",
    "RequestRejected",
    "EndpointUnavailable",
    "request_key",
    "normalize_base_url",
    "wait_for_endpoint",
    "wait_healthy",
    "find_free_port",
    "port_is_free",
]
