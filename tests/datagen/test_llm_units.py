"""LLM stage pieces that need no vLLM: answer parsing, style draw, client retries against a real local
HTTP server, the resumable response cache, server start-up errors, config validation."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datagen.llm.rollouts import dialogue_problem, parse_label, style_order, trim_to_sentence
from infra.inference import (
    ChatClient,
    EndpointUnavailable,
    InferenceServerError,
    RequestRejected,
    ResponseCache,
    VLLMServer,
)


@pytest.mark.parametrize(
    "answer,score,problem",
    [
        ('{"score": 3, "reason": "mentions a knife"}', 3, None),
        ('Sure! {"score": 0, "reason": "a recipe"} Hope that helps.', 0, None),
        ('{"score": "4", "reason": "slur"}', 4, None),
        ('{"score": 2.0}', 2, None),
        ('score: 5, reason: "threat"', 5, None),
        ('{"score": 7, "reason": "very bad"}', None, "score_out_of_range"),
        ('{"score": -1}', None, "score_out_of_range"),
        ('{"score": 2.5}', None, "score_not_an_integer"),
        ('{"score": "high"}', None, "score_not_a_number"),
        ("1. 1. 1. 1.", None, "invalid_json"),
        ("   ", None, "empty"),
        ('{"score": 1, "reason": "cut', 1, None),  # cut answers keep a readable score
    ],
)
def test_parse_label(answer, score, problem):
    got_score, _, got_problem = parse_label(answer)
    assert (got_score, got_problem) == (score, problem)


def test_style_draw_is_seeded_and_covers_all_styles():
    from datagen.llm.prompts import STYLES

    styles = list(STYLES)
    assert len(styles) >= 7
    assert style_order("doc-1", styles, 7) == style_order("doc-1", styles, 7)
    assert sorted(style_order("doc-1", styles, 7)) == sorted(styles)
    firsts = {style_order(f"doc-{i}", styles, 7)[0] for i in range(200)}
    assert firsts == set(styles)  # every style is drawn for some document
    assert style_order("doc-1", styles, 7) != style_order("doc-1", styles, 8) or style_order(
        "doc-2", styles, 7
    ) != style_order("doc-2", styles, 8)


def test_trim_and_dialogue_checks():
    assert trim_to_sentence("One. Two is here! Three is cut mid") == "One. Two is here!"
    assert trim_to_sentence("no sentence end") == ""
    assert dialogue_problem("User: can you help?\nAssistant: I can't help with that, but...") is None
    assert dialogue_problem("**User**: hi\nThe Assistant: no") is None
    assert dialogue_problem("Assistant: no thanks") == "no_dialogue_turns"


class _Flaky(BaseHTTPRequestHandler):
    """Answers 500 ``fail`` times, then 200 with a chat completion; 400 for model 'bad'."""

    fail = 2
    calls = 0

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        if body.get("model") == "bad":
            code, out = 400, {"error": "unknown model"}
        elif type(self).calls <= type(self).fail:
            code, out = 500, {"error": "busy"}
        elif self.path.endswith("/v1/completions"):
            code, out = (
                200,
                {
                    "choices": [{"text": " continued " + body["prompt"], "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 2},
                },
            )
        else:
            code, out = (
                200,
                {
                    "choices": [
                        {"message": {"content": "echo " + body["messages"][-1]["content"]}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                },
            )
        data = json.dumps(out).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def flaky_server():
    _Flaky.calls, _Flaky.fail = 0, 2
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_client_retries_5xx_then_succeeds(flaky_server):
    c = ChatClient(flaky_server, "m", max_retries=3, backoff=0.01)
    r = c.chat([{"role": "user", "content": "hi"}])
    assert r.text == "echo hi" and r.finish_reason == "stop"
    assert _Flaky.calls == 3 and c.stats["retries"] == 2


def test_completion_endpoint_and_mixed_batch(flaky_server):
    _Flaky.fail = 0
    c = ChatClient(flaky_server + "/v1/", "m")
    r = c.complete("Once upon", max_tokens=2)
    assert r.text == " continued Once upon" and r.finish_reason == "length" and r.completion_tokens == 2
    out = c.batch([{"prompt": "a"}, {"messages": [{"role": "user", "content": "b"}]}])
    assert [o.text for o in out] == [" continued a", "echo b"]
    with pytest.raises(ValueError, match="exactly one"):
        c.batch([{"sampling": {}}])


def test_client_gives_up_and_rejects(flaky_server):
    _Flaky.fail = 100
    c = ChatClient(flaky_server, "m", max_retries=2, backoff=0.01)
    with pytest.raises(EndpointUnavailable, match="after 3 tries"):
        c.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(RequestRejected, match="400"):
        ChatClient(flaky_server, "bad", max_retries=5, backoff=0.01).chat([{"role": "user", "content": "x"}])


def test_client_refused_port_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    c = ChatClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01)
    with pytest.raises(EndpointUnavailable, match="ConnectError"):
        c.chat([{"role": "user", "content": "hi"}])


def test_batch_uses_and_fills_cache(flaky_server, tmp_path):
    _Flaky.fail = 0
    reqs = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(5)]
    c = ChatClient(flaky_server, "m", max_concurrency=2)
    with ResponseCache(tmp_path / "cache.jsonl") as cache:
        out = c.batch(reqs, cache=cache)
    assert [r.text for r in out] == [f"echo q{i}" for i in range(5)]
    # simulate a crash in the middle of writing one more line
    with open(tmp_path / "cache.jsonl", "a") as f:
        f.write('{"key": "partial", "request": {')
    calls = _Flaky.calls
    with ResponseCache(tmp_path / "cache.jsonl") as cache:
        assert len(cache) == 5 and cache.bad_lines == 1
        out2 = c.batch(reqs + [{"messages": [{"role": "user", "content": "new"}]}], cache=cache)
    assert _Flaky.calls == calls + 1  # only the new request was sent
    assert [r.cached for r in out2] == [True] * 5 + [False]
    with ResponseCache(tmp_path / "cache.jsonl") as cache:
        assert len(cache) == 6


def test_server_start_errors_name_the_cause(tmp_path, smollm2_dir):
    with pytest.raises(InferenceServerError, match="does not exist"):
        VLLMServer(tmp_path / "no-such-model").start()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InferenceServerError, match="no config.json"):
        VLLMServer(tmp_path / "empty").start()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(InferenceServerError, match="already in use"):
            VLLMServer(smollm2_dir, port=s.getsockname()[1]).start()
    with pytest.raises(InferenceServerError, match="vLLM Python not found"):
        VLLMServer(smollm2_dir, python=tmp_path / "nope" / "python").start()


def test_llm_config_validation():
    from datagen.llm.config import LLMConfig
    from infra.config import ConfigError, build

    cfg = build(LLMConfig, {"styles": ["textbook", "friends"], "rescore_max_score_per_bucket": {"refusal": 3}})
    assert cfg.max_score_for("refusal") == 3 and cfg.max_score_for("moral") == 1
    with pytest.raises(ConfigError, match="unknown style"):
        build(LLMConfig, {"styles": ["sonnet"]})
    with pytest.raises(ConfigError, match="add 'refusal'"):
        build(LLMConfig, {"buckets": ["moral"]})
    with pytest.raises(ConfigError, match="unknown key 'server.modle'"):
        build(LLMConfig, {"server": {"modle": "x"}})


def test_stage_with_nothing_pending_starts_no_server(tmp_path, tokenizer_dir):
    from datagen.config import DatagenConfig
    from datagen.llm.stage import run_llm_stage
    from infra.config import load_config
    from infra.tokenizer import load_tokenizer

    # a server start would fail on this model path: the stage must not try when nothing is pending
    cfg = load_config(
        DatagenConfig,
        None,
        [
            "score.combine=label",
            "llm.enabled=true",
            "llm.rescore=false",
            f"llm.server.model={tmp_path / 'missing-model'}",
            "llm.buckets=[rephrased, refusal, moral]",
        ],
    )
    stats = run_llm_stage(cfg, tmp_path, load_tokenizer(tokenizer_dir))
    assert stats["transformations"] == {}
    assert stats["buckets"] == {b: {"documents": 0, "tokens": 0} for b in ("rephrased", "refusal", "moral")}
    assert (tmp_path / "quarantine" / "llm.jsonl").read_text() == ""
    with pytest.raises(Exception, match="no classifier is configured"):
        run_llm_stage(
            load_config(DatagenConfig, None, ["score.combine=label", "score.classifier=null", "llm.enabled=true"]),
            tmp_path,
            load_tokenizer(tokenizer_dir),
        )
