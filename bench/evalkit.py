"""Generation throughput of evalkit's two backends on the same prompts, in one run.

Prints JSON: prompts/s and new tokens/s through transformers (in process, batched greedy) and through
a vLLM OpenAI-compatible server (started here from the same folder, or ``--url``), and the ratio
vLLM/transformers. Usage:

    python bench/evalkit.py [--model DIR] [--n 16] [--max-new-tokens 48] [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _measure(model, prompts, dec) -> dict:
    model.generate(prompts[:2], dec)  # warm-up (first-call allocation, server graph paths)
    t = time.perf_counter()
    gens = model.generate(prompts, dec)
    dt = time.perf_counter() - t
    toks = sum(g.new_tokens for g in gens)
    return {
        "seconds": round(dt, 3),
        "prompts": len(prompts),
        "new_tokens": toks,
        "prompts_per_s": len(prompts) / dt,
        "tokens_per_s": toks / dt,
    }


def main(argv=None) -> int:
    from evalkit.config import DecodingConfig
    from evalkit.data import load_prompts
    from evalkit.model import HFModel, OpenAIModel
    from infra.paths import smollm2_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(smollm2_dir()))
    ap.add_argument("--prompts", default="evalkit/data/prompts/harmful.jsonl")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--url", default="", help="use a running OpenAI-compatible server instead of starting vLLM")
    args = ap.parse_args(argv)
    prompts = [p.prompt for p in load_prompts(args.prompts).prompts][: args.n]
    dec = DecodingConfig(mode="greedy", max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    res = {
        "model": args.model,
        "n_prompts": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
    }
    res["transformers"] = _measure(HFModel(args.model), prompts, dec)
    if args.url:
        res["vllm"] = _measure(OpenAIModel(args.url), prompts, dec)
    else:
        import torch

        from infra.inference import VLLMServer

        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
        t = time.perf_counter()
        with VLLMServer(args.model, dtype=dtype) as srv:
            res["vllm_startup_s"] = round(time.perf_counter() - t, 1)
            res["vllm"] = _measure(OpenAIModel(srv.base_url, srv.model_name), prompts, dec)
    res["ratio_vllm_over_transformers"] = {
        k: res["vllm"][k] / res["transformers"][k] for k in ("prompts_per_s", "tokens_per_s")
    }
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
