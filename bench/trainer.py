"""Trainer step throughput against a plain PyTorch baseline of the same shape, measured in one run.

    python bench/trainer.py                      # CPU: small shape (default when CUDA is absent)
    python bench/trainer.py --shape 1.7b         # GPU: SmolLM2-1.7B shape, seq 2048, micro-batch 4
    python bench/trainer.py --shape 1.7b --compile --spec torch [--float8-baseline]
    python bench/trainer.py --shape 1.7b --spec torch --modes eager,compile,fp8   # all three, one process

Both sides train the same Llama-shaped model (RMSNorm, SwiGLU, RoPE, tied embeddings) on the same
random token batches. The trainer side is the real training step of ``trainer.train``: megatron-core
GPTModel (spec chosen like the trainer does), Float16Module on bf16, megatron DDP with fp32 gradient
buffers, DistributedOptimizer with fp32 master weights, ``get_forward_backward_func``. The baseline
is a plain module with SDPA attention, AdamW (fused on GPU) and bf16 autocast on GPU, optionally under
``torch.compile`` and torchao float8. The trainer side is compiled per transformer layer
(``model.compile``) and runs FP8 through torchao with the ``torch`` spec (``model.fp8``), as a training
run would. Modes (``--modes``): ``eager``, ``compile`` (both sides compiled), ``fp8`` (both sides
compiled, torchao float8 tensorwise). On CPU the two steps alternate batch by batch (a shared
machine's load changes by the second) at ``--threads`` intra-op threads each; on GPU they run one after
the other, each step timed with CUDA events and no host sync between steps (the trainer's loop does
not synchronise per step either). Prints one JSON object: median tokens/s of each, their ratio, and MFU
on GPU (against ``--peak-tflops``, default 989 = H100/H200 dense bf16); with ``--modes`` one such
result per mode under ``runs``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SHAPES = {
    # CPU: big enough that matmuls dominate Python overhead, small enough for 2 cores
    "cpu-small": dict(
        preset="tiny",
        num_layers=4,
        hidden_size=256,
        num_attention_heads=4,
        num_query_groups=2,
        ffn_hidden_size=704,
        vocab=8192,
        seq=256,
        mbs=4,
    ),
    # seconds on a CPU: for testing this script and bench/gpu_check.py's dry run
    "tiny": dict(preset="tiny", vocab=384, seq=32, mbs=2),
    "135m": dict(preset="smollm2-135m", vocab=49152, seq=2048, mbs=8),
    "1.7b": dict(preset="smollm2-1.7b", vocab=49152, seq=2048, mbs=4),
}


# ---------------------------------------------------------------------------------------------
# Plain PyTorch baseline
# ---------------------------------------------------------------------------------------------


def rope_cache(seq: int, dim: int, theta: float, device):
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    freqs = torch.outer(torch.arange(seq, device=device, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class Block(nn.Module):
    def __init__(self, h, nh, ng, f, eps):
        super().__init__()
        self.nh, self.ng, self.hd = nh, ng, h // nh
        self.n1, self.n2 = nn.RMSNorm(h, eps=eps), nn.RMSNorm(h, eps=eps)
        self.qkv = nn.Linear(h, (nh + 2 * ng) * self.hd, bias=False)
        self.o = nn.Linear(h, h, bias=False)
        self.gate_up = nn.Linear(h, 2 * f, bias=False)
        self.down = nn.Linear(f, h, bias=False)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).split([self.nh * self.hd, self.ng * self.hd, self.ng * self.hd], dim=-1)
        q = apply_rope(q.view(b, s, self.nh, self.hd).transpose(1, 2), cos, sin)
        k = apply_rope(k.view(b, s, self.ng, self.hd).transpose(1, 2), cos, sin)
        v = v.view(b, s, self.ng, self.hd).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.nh != self.ng)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        g, u = self.gate_up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class PlainLlama(nn.Module):
    def __init__(self, arch, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, arch.hidden_size)
        self.blocks = nn.ModuleList(
            Block(
                arch.hidden_size, arch.num_attention_heads, arch.num_query_groups, arch.ffn_hidden_size, arch.norm_eps
            )
            for _ in range(arch.num_layers)
        )
        self.norm = nn.RMSNorm(arch.hidden_size, eps=arch.norm_eps)
        self.theta, self.hd = arch.rope_theta, arch.head_dim
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, labels):
        cos, sin = rope_cache(tokens.shape[1], self.hd, self.theta, tokens.device)
        x = self.emb(tokens)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        logits = F.linear(self.norm(x), self.emb.weight)  # tied
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())


def plain_step_fn(arch, vocab, compile_, float8, device):
    """A closure running one optimizer step of the plain PyTorch model on a token batch."""
    model = PlainLlama(arch, vocab).to(device)
    if float8:
        try:
            from torchao.float8 import convert_to_float8_training
        except ImportError as e:
            raise SystemExit("--float8-baseline needs torchao (pip install torchao)") from e
        convert_to_float8_training(model, module_filter_fn=lambda m, n: isinstance(m, nn.Linear))
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), fused=device.type == "cuda"
    )
    fwd = torch.compile(model) if compile_ else model
    on_gpu = device.type == "cuda"

    def step(tokens):
        tokens = tokens.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
            loss = fwd(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


# ---------------------------------------------------------------------------------------------
# The trainer's step
# ---------------------------------------------------------------------------------------------


def trainer_step_fn(shape, arch, vocab, seq, mbs, spec, compile_, fp8: bool = False):
    """A closure running one step of the trainer's real training step (``trainer.train`` pieces)."""
    from infra.config import load_config
    from trainer import train as T
    from trainer.config import TrainerConfig
    from trainer.hot_loop import optimizer_step
    from trainer.layer_specs import resolve_spec_name
    from trainer.model import padded_vocab_size

    overrides = [
        f"model.preset={shape['preset']}",
        f"model.spec={spec}",
        f"model.compile={str(compile_).lower()}",
        f"train.seq_length={seq}",
        f"train.micro_batch_size={mbs}",
        f"train.global_batch_size={mbs}",
        "train.warmup_steps=0",
        "data.corpus=unused",
        "data.curriculum={phases: [{start: 0.0, weights: {raw: 1.0}}]}",
    ]
    if fp8:
        overrides += ["model.fp8=hybrid", "model.fp8_recipe=tensorwise"]
    cfg = load_config(TrainerConfig, None, overrides)
    threads = torch.get_num_threads()
    info = T.init_distributed(1, 1, seed=0)
    torch.set_num_threads(threads)  # same intra-op threads as the baseline
    precision = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    ms = T.ModelSetup(
        arch=arch,
        spec=resolve_spec_name(spec),
        vocab_size=vocab,
        padded_vocab=padded_vocab_size(vocab, 128, 1),
        dtype=precision,
        tokenizer=None,
    )
    ddp, optimizer, scheduler = T.build_model_and_optimizer(cfg, ms, info)
    from megatron.core.pipeline_parallel import get_forward_backward_func

    fb, fs = get_forward_backward_func(), T.make_forward_step()

    def step(tokens):
        batch = {"tokens": tokens, "loss_mask": torch.ones(tokens.shape[0], seq)}
        mbs_list = T.split_microbatches(batch, mbs, info.device)
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        losses = fb(
            forward_step_func=fs,
            data_iterator=iter(mbs_list),
            model=[ddp],
            num_microbatches=1,
            seq_length=seq,
            micro_batch_size=mbs,
            forward_only=False,
        )
        optimizer_step(optimizer, cfg.train.clip_grad, info.device)
        scheduler.step(1)
        parts = T.local_loss_parts(losses, info)
        return parts[0] / parts[1].clamp(min=1)

    return step, ms.spec


def run_steps(step, batches, on_gpu: bool) -> tuple[list[float], float]:
    """Per-step seconds and the last loss. GPU: CUDA events around each step and one synchronisation
    at the end (no host sync between steps); CPU: perf_counter."""
    if not on_gpu:
        times, loss = [], None
        for t in batches:
            t0 = time.perf_counter()
            loss = step(t)
            times.append(time.perf_counter() - t0)
        return times, float(loss)
    marks, loss = [], None
    for t in batches:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        loss = step(t)
        b.record()
        marks.append((a, b))
    torch.cuda.synchronize()
    return [a.elapsed_time(b) / 1000.0 for a, b in marks], float(loss)


# mode -> (torch.compile, torchao float8), both applied to both sides
MODES = {"eager": (False, False), "compile": (True, False), "fp8": (True, True), "eager-fp8": (False, True)}


def run_mode(mode, args, shape, arch, vocab, seq, mbs, batches, warmup, on_gpu, summary) -> dict:
    """Baseline and trainer of one mode: (compile, float8) = MODES[mode]."""
    compile_, float8 = MODES[mode]
    device = torch.device("cuda" if on_gpu else "cpu")
    if on_gpu:
        # one model at a time (both 1.7B models would not fit beside each other)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step = plain_step_fn(arch, vocab, compile_, float8, device)
        b_times, b_loss = run_steps(step, batches, True)
        b_mem = torch.cuda.max_memory_allocated() / 2**30
        del step
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step, spec = trainer_step_fn(shape, arch, vocab, seq, mbs, args.spec, compile_, float8)
        t_times, t_loss = run_steps(step, batches, True)
        t_mem = torch.cuda.max_memory_allocated() / 2**30
        del step
        gc.collect()
    else:
        # CPU (shared, noisy): interleave the two steps so that both see the same load
        b_step = plain_step_fn(arch, vocab, compile_, float8, device)
        t_step, spec = trainer_step_fn(shape, arch, vocab, seq, mbs, args.spec, compile_, float8)
        b_times, t_times = [], []
        for t in batches:
            bt, b_loss = run_steps(b_step, [t], False)
            tt, t_loss = run_steps(t_step, [t], False)
            b_times += bt
            t_times += tt
        b_mem = t_mem = None
    base = summary(b_times[warmup:], b_loss, b_mem)
    trainer = summary(t_times[warmup:], t_loss, t_mem)
    return {
        "spec": spec,
        "compile": compile_,
        "float8": float8,
        "baseline": base,
        "trainer": trainer,
        "ratio_trainer_over_baseline": round(trainer["tokens_per_s"] / base["tokens_per_s"], 3),
    }


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=list(SHAPES), default=None, help="default: 1.7b on GPU, cpu-small on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 GPU / 8 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 5 GPU / 2 CPU)")
    ap.add_argument("--spec", default="auto", choices=["auto", "te", "torch", "local"])
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    ap.add_argument(
        "--float8-baseline",
        action="store_true",
        help="torchao float8 training (tensorwise) for both sides: the baseline's linears, the trainer's torch spec",
    )
    ap.add_argument(
        "--modes",
        default=None,
        help="comma-separated modes run one after the other in this process: eager, compile, fp8, eager-fp8 "
        "(overrides --compile / --float8-baseline)",
    )
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU only: intra-op threads for both sides (1 is robust on a shared machine, where "
        "OpenMP threads spinning against other processes slow steps down many times)",
    )
    args = ap.parse_args(argv)
    if args.modes is not None:
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            ap.error(f"--modes: unknown mode(s) {bad or args.modes!r}; modes: {', '.join(MODES)}")
        args.modes = modes
    return args


def main(argv=None):
    args = parse_args(argv)

    from trainer.model import flops_per_token, resolve_arch

    on_gpu = torch.cuda.is_available()
    shape = SHAPES[args.shape or ("1.7b" if on_gpu else "cpu-small")]
    steps = args.steps or (20 if on_gpu else 8)
    warmup = args.warmup if args.warmup is not None else (5 if on_gpu else 2)
    arch = resolve_arch(
        shape["preset"],
        **{
            k: shape[k]
            for k in ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size")
            if k in shape
        },
    )
    vocab, seq, mbs = shape["vocab"], shape["seq"], shape["mbs"]
    if not on_gpu:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (mbs, seq + 1), generator=g) for _ in range(steps + warmup)]
    if on_gpu:
        batches = [b.pin_memory() for b in batches]
    tokens_per_step = mbs * seq
    flops_tok = flops_per_token(arch, vocab, seq)

    def summary(times, loss, mem):
        med = statistics.median(times)
        tps = tokens_per_step / med
        out = {"tokens_per_s": round(tps, 1), "step_s_median": round(med, 5), "loss_last": round(loss, 4)}
        if on_gpu:
            out["mfu"] = round(tps * flops_tok / (args.peak_tflops * 1e12), 4)
            out["max_mem_gib"] = round(mem, 2)
        return out

    from trainer.model import count_parameters

    result = {
        "bench": "trainer_step_vs_plain_pytorch",
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "shape": {**{k: v for k, v in shape.items()}, "params": count_parameters(arch, vocab)},
        "precision": "bf16" if on_gpu else "fp32",
        "timed_steps": steps,
        "warmup_steps": warmup,
        "flops_per_token": flops_tok,
        "peak_tflops": args.peak_tflops if on_gpu else None,
    }
    common = (args, shape, arch, vocab, seq, mbs, batches, warmup, on_gpu, summary)
    if args.modes is None:
        mode = {v: k for k, v in MODES.items()}[(args.compile, args.float8_baseline)]
        r = run_mode(mode, *common)
        result.update(
            spec=r["spec"],
            compile=r["compile"],
            float8_baseline=r["float8"],
            baseline=r["baseline"],
            trainer=r["trainer"],
            ratio_trainer_over_baseline=r["ratio_trainer_over_baseline"],
        )
    else:
        result["runs"] = {}
        for mode in args.modes:
            t0 = time.perf_counter()
            result["runs"][mode] = dict(run_mode(mode, *common), wall_s=round(time.perf_counter() - t0, 1))
            print(json.dumps({mode: result["runs"][mode]}), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))
    from trainer.distributed import shutdown

    shutdown()


if __name__ == "__main__":
    main()
