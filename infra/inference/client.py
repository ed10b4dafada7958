"""A client for OpenAI-compatible servers (vLLM, SGLang, hosted APIs): chat and text completions.

What it adds over a bare HTTP call:

* bounded concurrency (one semaphore per client, shared by every request it sends);
* per-request timeouts; retries with exponential backoff and jitter on connection errors, timeouts,
  HTTP 429 and 5xx; 4xx answers fail at once (they will not succeed on retry);
* ``EndpointUnavailable`` once the retries are spent, so that a job whose server died fails quickly
  with a clear error instead of hanging;
* ``ResponseCache``: an append-only JSONL file of request/response pairs keyed by a stable hash (or a
  caller's key), so that a crashed batch re-run sends only what is missing.

Used by datagen (labelling, rephrasing) and evalkit (generation backend, LLM judges).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.log import get_logger

log = get_logger(__name__)

__all__ = [
    "ChatClient",
    "ChatResult",
    "ChatRequest",
    "ResponseCache",
    "RequestRejected",
    "EndpointUnavailable",
    "request_key",
    "normalize_base_url",
]


class RequestRejected(RuntimeError):
    """The server answered 4xx (bad request, context too long, unknown model): retrying will not help."""

    def __init__(self, status: int, body: str):
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class EndpointUnavailable(ConnectionError):
    """The server could not be reached (or kept failing) after all retries."""


def normalize_base_url(url: str) -> str:
    """``http://h:p``, ``http://h:p/`` and ``http://h:p/v1`` all become ``http://h:p/v1``."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


@dataclass
class ChatResult:
    """One generation. ``raw`` is the server's JSON answer; ``cached`` tells it came from a cache."""

    text: str
    finish_reason: str | None
    usage: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    cached: bool = False

    @property
    def completion_tokens(self) -> int:
        return int(self.usage.get("completion_tokens", 0) or 0)

    @classmethod
    def from_response(cls, resp: dict, cached: bool = False) -> ChatResult:
        choice = (resp.get("choices") or [{}])[0]
        msg = choice.get("message") or {}
        text = msg.get("content") if msg else choice.get("text")
        return cls(
            text=text or "",
            finish_reason=choice.get("finish_reason"),
            usage=resp.get("usage") or {},
            raw=resp,
            cached=cached,
        )


@dataclass
class ChatRequest:
    """A request for the batch helpers: chat ``messages``, or a plain ``prompt`` for the completions
    endpoint (base models). ``key`` names it in the cache (default: content hash)."""

    messages: list[dict] | None = None
    sampling: dict = field(default_factory=dict)
    key: str | None = None
    prompt: str | None = None

    def __post_init__(self):
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("a request needs exactly one of 'messages' (chat) or 'prompt' (completion)")


def request_key(model: str, messages: list[dict] | str, sampling: dict) -> str:
    """Stable hash of what determines an answer: model, messages (or prompt) and sampling parameters."""
    blob = json.dumps({"model": model, "messages": messages, "sampling": sampling}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ResponseCache:
    """Append-only JSONL of ``{"key", "request", "response"}`` lines; resumable after a crash.

    A line cut short by a crash (the last one) is ignored on load. Thread- and task-safe for appends.

    Args:
        path: the JSONL file (created with its folder).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict] = {}
        self._lock = threading.Lock()
        self.bad_lines = 0
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self._entries[rec["key"]] = rec["response"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.bad_lines += 1
        # a truncated last line has no newline: start appends on a fresh line
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    with open(self.path, "a", encoding="utf-8") as g:
                        g.write("\n")
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, request: dict, response: dict) -> None:
        line = json.dumps({"key": key, "request": request, "response": response}, ensure_ascii=False)
        with self._lock:
            self._fh.write(line + "\n")
            self._fh.flush()
            self._entries[key] = response

    def close(self) -> None:
        self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ChatClient:
    """Async/sync client for ``/v1/chat/completions`` with bounded concurrency and retries.

    Args:
        base_url: server URL, with or without ``/v1``.
        model: model name sent with every request (vLLM: the served model name).
        max_concurrency: most requests in flight at once from this client.
        timeout: seconds for one HTTP request (connect + generate).
        max_retries: retries after the first try for retryable failures (connection, timeout, 429, 5xx).
        backoff: first retry delay in seconds, doubled each retry (with +-25% jitter).
        backoff_max: longest delay between retries.
        api_key: bearer token for hosted endpoints.
        default_sampling: parameters merged under every request's own (e.g. temperature, max_tokens).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        max_concurrency: int = 8,
        timeout: float = 300.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        api_key: str | None = None,
        default_sampling: dict | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.api_key = api_key
        self.default_sampling = dict(default_sampling or {})
        # one semaphore and one connection pool per event loop (asyncio objects are loop-bound)
        self._per_loop: dict[int, tuple[asyncio.Semaphore, Any]] = {}
        self.stats = {"requests": 0, "retries": 0, "failures": 0, "prompt_tokens": 0, "completion_tokens": 0}

    # ----------------------------------------------------------- internals
    def _loop_state(self):
        import httpx

        loop = asyncio.get_running_loop()
        st = self._per_loop.get(id(loop))
        if st is None or st[1].is_closed:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=10.0), headers=headers, limits=limits)
            st = (asyncio.Semaphore(self.max_concurrency), http)
            self._per_loop[id(loop)] = st
        return st

    def _delay(self, attempt: int) -> float:
        d = min(self.backoff_max, self.backoff * (2**attempt))
        return d * random.uniform(0.75, 1.25)

    async def post_chat(self, payload: dict) -> dict:
        """POST a full chat payload (``model`` filled in when absent); return the JSON answer.

        Raises ``RequestRejected`` on 4xx, ``EndpointUnavailable`` once retries are spent.
        """
        return await self._post("chat/completions", payload)

    async def post_completion(self, payload: dict) -> dict:
        """POST a full ``/v1/completions`` payload (``prompt``: text continued by a base model)."""
        return await self._post("completions", payload)

    async def _post(self, route: str, payload: dict) -> dict:
        import httpx

        payload = {"model": self.model, **self.default_sampling, **payload}
        sem, http = self._loop_state()
        url = f"{self.base_url}/{route}"
        last = ""
        async with sem:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    self.stats["retries"] += 1
                    await asyncio.sleep(self._delay(attempt - 1))
                self.stats["requests"] += 1
                try:
                    r = await http.post(url, json=payload)
                except (httpx.TransportError, OSError) as e:  # refused, reset, timeout
                    last = f"{type(e).__name__}: {e}"
                    log.debug("request to %s failed (%s), attempt %d", url, last, attempt + 1)
                    continue
                if r.status_code == 200:
                    resp = r.json()
                    usage = resp.get("usage") or {}
                    self.stats["prompt_tokens"] += int(usage.get("prompt_tokens", 0) or 0)
                    self.stats["completion_tokens"] += int(usage.get("completion_tokens", 0) or 0)
                    return resp
                if r.status_code == 429 or r.status_code >= 500:
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                    continue
                self.stats["failures"] += 1
                raise RequestRejected(r.status_code, r.text)
        self.stats["failures"] += 1
        raise EndpointUnavailable(f"{url} unavailable after {self.max_retries + 1} tries: {last}")

    # ---------------------------------------------------------------- API
    async def achat(self, messages: list[dict], **sampling) -> ChatResult:
        """One chat completion. ``sampling``: any OpenAI/vLLM parameter (max_tokens, temperature, seed...)."""
        resp = await self.post_chat({"messages": messages, **sampling})
        return ChatResult.from_response(resp)

    def chat(self, messages: list[dict], **sampling) -> ChatResult:
        """Synchronous ``achat`` (runs its own event loop; do not call from inside one)."""
        return asyncio.run(self._run_closing(self.achat(messages, **sampling)))

    async def acomplete(self, prompt: str, **sampling) -> ChatResult:
        """One text completion (``/v1/completions``), for base models without a chat template."""
        resp = await self.post_completion({"prompt": prompt, **sampling})
        return ChatResult.from_response(resp)

    def complete(self, prompt: str, **sampling) -> ChatResult:
        """Synchronous ``acomplete``."""
        return asyncio.run(self._run_closing(self.acomplete(prompt, **sampling)))

    async def abatch(
        self,
        requests: Iterable[ChatRequest | dict],
        cache: ResponseCache | None = None,
        return_exceptions: bool = True,
        on_result: Callable[[int, ChatResult | Exception], None] | None = None,
    ) -> list[ChatResult | Exception]:
        """Send many requests with bounded concurrency; results come back in request order.

        Args:
            requests: ``ChatRequest``s or dicts with ``messages`` or ``prompt`` (+ ``sampling``, ``key``).
            cache: answers found there are not sent again; new answers are appended to it.
            return_exceptions: a rejected request yields its ``RequestRejected`` in the list instead of
                raising. ``EndpointUnavailable`` always raises (after the other in-flight requests end,
                so that everything finished is in the cache).
            on_result: called as ``on_result(index, result)`` when each request ends.
        """
        reqs = [r if isinstance(r, ChatRequest) else ChatRequest(**r) for r in requests]
        out: list[ChatResult | Exception | None] = [None] * len(reqs)

        async def one(i: int, req: ChatRequest):
            sampling = {**self.default_sampling, **req.sampling}
            body = {"messages": req.messages} if req.messages is not None else {"prompt": req.prompt}
            key = req.key or request_key(self.model, req.messages if req.messages is not None else req.prompt, sampling)
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                res: ChatResult | Exception = ChatResult.from_response(hit, cached=True)
            else:
                try:
                    if req.messages is not None:
                        resp = await self.post_chat({**body, **sampling})
                    else:
                        resp = await self.post_completion({**body, **sampling})
                    if cache is not None:
                        cache.put(key, {**body, "sampling": sampling}, resp)
                    res = ChatResult.from_response(resp)
                except RequestRejected as e:
                    if not return_exceptions:
                        raise
                    res = e
            out[i] = res
            if on_result:
                on_result(i, res)

        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return out  # type: ignore[return-value]

    def batch(
        self,
        requests: Iterable[ChatRequest | dict],
        cache: ResponseCache | None = None,
        return_exceptions: bool = True,
        on_result=None,
    ) -> list[ChatResult | Exception]:
        """Synchronous ``abatch``."""
        return asyncio.run(self._run_closing(self.abatch(requests, cache, return_exceptions, on_result)))

    async def _run_closing(self, coro):
        try:
            return await coro
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close this event loop's connection pool."""
        try:
            loop_id = id(asyncio.get_running_loop())
        except RuntimeError:
            return
        st = self._per_loop.pop(loop_id, None)
        if st is not None:
            await st[1].aclose()

    def models(self) -> list[str]:
        """Model ids the server serves (``GET /v1/models``)."""
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        r = httpx.get(f"{self.base_url}/models", timeout=10.0, headers=headers)
        r.raise_for_status()
        return [m["id"] for m in r.json().get("data", [])]


def wait_for_endpoint(base_url: str, timeout: float = 30.0) -> list[str]:
    """Wait until an existing endpoint answers ``/v1/models``; return its model ids."""
    from infra.inference.server import wait_healthy

    root = normalize_base_url(base_url)[: -len("/v1")]
    return wait_healthy(root, timeout=timeout)
