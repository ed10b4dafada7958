"""Rephrasing throughput: the datagen LLM pipeline vs a plain client, same prompts, same server, same run.

The pipeline path is the real one (datatrove ``InferenceRunner`` with our endpoint backend, checkpoints,
request cache, JSONL output). The baseline sends exactly the requests the pipeline sent (read back from
its output) with ``infra.inference.ChatClient`` at the same concurrency. The two paths alternate for
``--repeats`` rounds and medians are compared, which absorbs drifts of a shared machine. Greedy
decoding, so both paths generate the same number of tokens.

    python bench/rephrase.py                      # starts vLLM with SmolLM2-135M-Instruct (CPU here)
    python bench/rephrase.py --url http://127.0.0.1:8000 --docs 256 --concurrency 64   # a running server

Prints one JSON object: completion tokens/s of each path and ``ratio``, the median over rounds of
pipeline / baseline tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _docs(n: int) -> list:
    from datatrove.data import Document

    from infra.paths import default_corpus

    recs = [json.loads(x) for x in default_corpus().read_text().splitlines() if x.strip()]
    mid = [r for r in recs if 1 <= int(r.get("score", 0)) <= 3] or recs
    return [Document(text=mid[i % len(mid)]["text"], id=f"bench-{i:05d}") for i in range(n)]


async def _baseline(client, requests) -> tuple[float, int]:
    from infra.inference import ChatRequest

    t0 = time.perf_counter()
    res = await client.abatch([ChatRequest(messages=m, sampling=s) for m, s in requests])
    dt = time.perf_counter() - t0
    await client.aclose()
    return dt, sum(r.completion_tokens for r in res)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="", help="running OpenAI-compatible server (default: start vLLM here)")
    p.add_argument("--model", default="", help="model to start (default: prepared SmolLM2-135M-Instruct)")
    p.add_argument("--docs", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--repeats", type=int, default=3, help="baseline/pipeline rounds (medians are reported)")
    args = p.parse_args(argv)

    from datagen.llm.rollouts import RolloutSettings, rephrase_rollout
    from datagen.llm.runner import Endpoint, read_outputs, run_transformation
    from infra.inference import ChatClient, VLLMServer, wait_for_endpoint
    from infra.log import setup_logging

    setup_logging("WARNING")
    server = None
    if args.url:
        root = args.url.rstrip("/").removesuffix("/v1")
        model = wait_for_endpoint(root)[0]
    else:
        from infra.models import prepare_smollm2

        server = VLLMServer(args.model or prepare_smollm2(), dtype=args.dtype).start()
        root, model = server.root_url, server.model_name
    try:
        settings = RolloutSettings(
            sampling={"rephrase": {"max_tokens": args.max_tokens, "temperature": 0.0}},
            accept_truncated=True,
            min_output_chars=1,
            attempts=1,
            seed_requests=False,
        )
        ep = Endpoint(root_url=root, model=model, max_concurrency=args.concurrency)
        docs = _docs(args.docs)
        client = ChatClient(root, model, max_concurrency=args.concurrency)
        # warm-up (first requests pay for lazy initialisation in the server)
        asyncio.run(_baseline(client, [([{"role": "user", "content": "Say hello."}], {"max_tokens": 8})]))
        with tempfile.TemporaryDirectory() as tmp:
            # the pipeline's prompts are needed for the baseline: run it once to learn them (not timed)
            warm = run_transformation(
                "probe",
                docs,
                len(docs),
                rephrase_rollout,
                ep,
                Path(tmp),
                shared_context={"settings": settings, "classifier": None},
            )
            requests = []
            for rec in warm.values():
                for ex in rec["metadata"]["llm"][0]["exchanges"]:
                    requests.append((ex["messages"], ex["sampling"]))
            base_tps, pipe_tps, pipe_s = [], [], []
            for r in range(args.repeats):  # alternate the two paths so drifts of a shared machine hit both
                b_dt, b_tok = asyncio.run(_baseline(client, requests))
                base_tps.append(b_tok / b_dt)
                t0 = time.perf_counter()
                out = run_transformation(
                    f"timed{r}",
                    docs,
                    len(docs),
                    rephrase_rollout,
                    ep,
                    Path(tmp),
                    shared_context={"settings": settings, "classifier": None},
                )
                p_dt = time.perf_counter() - t0
                p_tok = sum(
                    ex["usage"]["completion_tokens"]
                    for rec in out.values()
                    for ex in rec["metadata"]["llm"][0]["exchanges"]
                )
                assert len(read_outputs(Path(tmp) / f"timed{r}" / "out")) == len(docs)
                pipe_tps.append(p_tok / p_dt)
                pipe_s.append(p_dt)
        med_b, med_p = statistics.median(base_tps), statistics.median(pipe_tps)
        result = {
            "bench": "rephrase",
            "device": "cpu" if args.dtype == "float32" else "gpu",
            "model": model,
            "docs": len(docs),
            "requests": len(requests),
            "max_tokens": args.max_tokens,
            "concurrency": args.concurrency,
            "repeats": args.repeats,
            "pipeline": {
                "tokens_per_s": round(med_p, 2),
                "per_repeat": [round(x, 2) for x in pipe_tps],
                "seconds": [round(x, 2) for x in pipe_s],
            },
            "baseline_client": {"tokens_per_s": round(med_b, 2), "per_repeat": [round(x, 2) for x in base_tps]},
            # each round's pipeline run is paired with the baseline run just before it
            "ratio": round(statistics.median(p / b for p, b in zip(pipe_tps, base_tps)), 3),
            "ratio_of_medians": round(med_p / med_b, 3),
            "target_ratio": 0.9,
        }
        print(json.dumps(result, indent=2))
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
