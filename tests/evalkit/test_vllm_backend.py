"""The asr suite through a real vLLM OpenAI-compatible server (one shared server per test session)."""

import json

import pytest

from evalkit.__main__ import main


@pytest.mark.vllm
@pytest.mark.slow
def test_asr_through_vllm_server(vllm_server, tmp_path, smollm2_dir):
    out = tmp_path / "vllm"
    rc = main(
        [
            "run",
            "--model",
            str(smollm2_dir),
            "--suite",
            "asr",
            "--out",
            str(out),
            "data.limit=4",
            "decoding.max_new_tokens=16",
            "backend.kind=openai",
            f"backend.url={vllm_server.root_url}",
            f"backend.served_model={vllm_server.model_name}",
            # the same server as a HarmBench-protocol judge (raw completion) and a Llama Guard-style one (chat):
            # plumbing only, SmolLM2 is far too weak to judge
            "judges.use=[{kind: keyword}, "
            + ", ".join(
                f"{{kind: llm, protocol: {p}, url: {vllm_server.root_url}, served_model: {vllm_server.model_name}}}"
                for p in ("harmbench", "llamaguard")
            )
            + "]",
        ]
    )
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["backend"] == "openai" and res["model"]["served_model"] == vllm_server.model_name
    rows = [json.loads(x) for x in (out / "samples" / "asr.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["output"] for r in rows)
    assert all(0 < r["new_tokens"] <= 16 for r in rows)
    judges = res["suites"]["asr"]["judges"]
    assert judges["keyword"]["judged"] == 4
    for name in ("llm_harmbench", "llm_llamaguard"):
        assert judges[name]["judged"] + judges[name]["unparsed"] + judges[name]["errors"] == judges[name]["n"] == 4
    assert all(r["judge_details"]["llm_harmbench"]["raw"] is not None for r in rows)
