"""A real local HTTP server speaking the OpenAI API subset ``infra.inference.ChatClient`` uses, answering
from a script, for tests of LLM judges and server backends.

```python
def script(req):  # req.body: the request's JSON; req.attempt: how often this exact body came before
    return "yes" if "refuse" in req.text else Reply(status=400, text="prompt too long")

with ScriptedServer(script) as server:
    model = OpenAIModel(server.url, "judge")
    ...
    server.requests  # every request: Request(path, body, attempt), in arrival order
```

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``. The script is a
function of a ``Request`` or a list of replies consumed in arrival order; a reply is a string (a
well-formed answer with that text) or a ``Reply`` (an HTTP error, empty ``choices``, a null content, a
delay, a given token count).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Reply", "Request", "ScriptedServer"]


@dataclass
class Reply:
    """One scripted answer.

    Attributes:
        text: the answer's text (the chat message content or the completion text); with an HTTP error
            status, the error body.
        status: HTTP status; 200 sends a completion, anything else ``text`` as the error body.
        choices: False sends ``"choices": []``.
        null_content: send ``"content": null`` (chat) / ``"text": null`` (completion).
        delay_s: seconds to wait before answering.
        completion_tokens: ``usage.completion_tokens`` (default: the number of words of ``text``).
    """

    text: str = ""
    status: int = 200
    choices: bool = True
    null_content: bool = False
    delay_s: float = 0.0
    completion_tokens: int | None = None


@dataclass
class Request:
    """One request the server received.

    Attributes:
        path: the URL path (``/v1/chat/completions``...).
        body: the JSON body (empty for GET).
        attempt: how many requests with the same path and body came before this one (0: the first try).
    """

    path: str
    body: dict = field(default_factory=dict)
    attempt: int = 0

    @property
    def text(self) -> str:
        """The request's text: the completion prompt, or every chat message's content joined by newlines."""
        if "prompt" in self.body:
            return str(self.body["prompt"])
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))


class ScriptedServer:
    """The server, on 127.0.0.1 at a free port, in a background thread (a context manager).

    Args:
        script: a function ``Request -> Reply | str``, or a list of replies taken in arrival order (a
            request beyond its end gets HTTP 500).
        model: the model id ``/v1/models`` lists.
    """

    def __init__(self, script: Callable[[Request], Reply | str] | list, model: str = "scripted-judge"):
        self.script = script
        self.model = model
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._next = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> ScriptedServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, {"error": f"no route {self.path}"})
                server._record(Request(self.path, {}))
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except json.JSONDecodeError as e:
                    return self._send(400, {"error": f"invalid JSON: {e}"})
                route = self.path.rstrip("/")
                if route not in ("/v1/chat/completions", "/v1/completions"):
                    return self._send(404, {"error": f"no route {self.path}"})
                req = server._record(Request(route, body))
                reply = server._reply(req)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.status != 200:
                    return self._send(reply.status, {"error": {"message": reply.text, "code": reply.status}})
                self._send(200, server._completion(route, body, reply))

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="scripted-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's ``/v1`` root."""
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- internals -------------------------------------------------------------------------------------
    def _record(self, req: Request) -> Request:
        key = req.path + json.dumps(req.body, sort_keys=True)
        with self._lock:
            req.attempt = self._seen.get(key, 0)
            self._seen[key] = req.attempt + 1
            self.requests.append(req)
        return req

    def _reply(self, req: Request) -> Reply:
        if callable(self.script):
            got = self.script(req)
        else:
            with self._lock:
                i, self._next = self._next, self._next + 1
            got = self.script[i] if i < len(self.script) else Reply("script exhausted", status=500)
        return Reply(got) if isinstance(got, str) else got

    def _completion(self, route: str, body: dict, reply: Reply) -> dict:
        chat = route.endswith("chat/completions")
        text = None if reply.null_content else reply.text
        tokens = reply.completion_tokens if reply.completion_tokens is not None else len(reply.text.split())
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        return {
            "id": "scripted",
            "object": "chat.completion" if chat else "text_completion",
            "model": body.get("model", self.model),
            "choices": [choice] if reply.choices else [],
            "usage": {"prompt_tokens": 1, "completion_tokens": tokens, "total_tokens": 1 + tokens},
        }

    def posts(self) -> list[Request]:
        """The POST requests (completions), in arrival order."""
        return [r for r in self.requests if r.path != "/v1/models"]
