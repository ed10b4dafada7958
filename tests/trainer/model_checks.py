"""Checks of the trainer's model pieces in one CPU process (megatron over gloo), written as JSON.

    python tests/trainer/model_checks.py OUT.json [--only NAME ...]

* ``padded_vocab``: the padded-vocabulary mask (an in-place fill of the padding columns only) gives
  the loss and the gradients of the full-logits ``masked_fill`` it replaced, bit for bit, and the
  loss of a cross-entropy over the real vocabulary alone.
* ``compile_layers``: ``model.compile`` compiles each transformer layer (not the whole model); the loss
  equals the eager loss. The ``aot_eager`` back-end traces and runs the graphs without generating
  code, so the check is quick on a CPU.
* ``hoisted_gather_hooks``: with ``overlap_param_gather`` and compiled layers, DDP's per-module
  parameter-gather pre-hooks inside each layer are replaced by one on the layer; the loss through DDP
  equals the bare model's.
* ``float8``: torchao's float8 conversion of the torch spec replaces the four matmuls of every layer,
  keeps the parameters (same objects, same state-dict keys) and leaves the rest in place (skipped
  when torchao is not installed). Where this torch build has a CPU ``torch._scaled_mm`` the float8
  forward and backward run too (loss against bf16, gradients reaching the weights); elsewhere float8
  matmuls need a GPU and that part is reported as not run.

Runs in its own process: ``trainer.cpu_compat`` must not leak into pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

VOCAB, SEQ, BATCH = 300, 16, 2


def _model(spec: str, seed: int = 0):
    from trainer.model import build_gpt, padded_vocab_size, resolve_arch, transformer_config

    arch = resolve_arch("tiny")
    torch.manual_seed(seed)
    config = transformer_config(arch, spec=spec)
    padded = padded_vocab_size(VOCAB, 128, 1)
    return build_gpt(config, arch, spec, padded, SEQ), padded


def _batch():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g)
    pos = torch.arange(SEQ).unsqueeze(0).expand(BATCH, SEQ)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), pos


def _loss_and_grads(model, tokens, labels, pos):
    model.zero_grad(set_to_none=True)
    loss = model(tokens, pos, None, labels=labels).float().sum()
    loss.backward()
    return loss.detach().clone(), {
        n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
    }


def check_padded_vocab() -> dict:
    from trainer.model import mask_padded_vocab

    model, padded = _model("local")
    tokens, labels, pos = _batch()

    def full_masked_fill(module, inputs, output):  # the mask as it was: a pass over every logit
        logits, bias = output
        mask = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        mask[VOCAB:] = True
        return logits.masked_fill(mask, torch.finfo(logits.dtype).min), bias

    handle = model.output_layer.register_forward_hook(full_masked_fill)
    ref_loss, ref_grads = _loss_and_grads(model, tokens, labels, pos)
    handle.remove()
    handle = mask_padded_vocab(model, VOCAB)
    loss, grads = _loss_and_grads(model, tokens, labels, pos)
    with torch.no_grad():
        logits = model(tokens, pos, None)  # [b, s, padded]
    handle.remove()
    with torch.no_grad():
        raw = model(tokens, pos, None)
    sliced = torch.nn.functional.cross_entropy(
        raw[..., :VOCAB].float().flatten(0, 1), labels.flatten(), reduction="sum"
    )
    emb_grad = grads["embedding.word_embeddings.weight"]
    return {
        "padded_vocab": padded,
        "loss_equal": bool(torch.equal(loss, ref_loss)),
        "grads_equal": sorted(grads) == sorted(ref_grads) and all(torch.equal(grads[k], ref_grads[k]) for k in grads),
        "loss": float(loss),
        "sliced_reference_loss": float(sliced),
        "pad_logits_min": bool((logits[..., VOCAB:] == torch.finfo(logits.dtype).min).all()),
        "real_logits_unchanged": bool(torch.equal(logits[..., :VOCAB], raw[..., :VOCAB])),
        "pad_rows_grad_zero": bool((emb_grad[VOCAB:] == 0).all()),
        "real_rows_grad_nonzero": bool(emb_grad[:VOCAB].abs().sum() > 0),
    }


def check_compile_layers() -> dict:
    from trainer.model import compile_layers, mask_padded_vocab

    model, _ = _model("torch")
    mask_padded_vocab(model, VOCAB)
    tokens, labels, pos = _batch()
    eager_loss, eager_grads = _loss_and_grads(model, tokens, labels, pos)
    n = compile_layers(model, backend="aot_eager")
    compiled_loss, compiled_grads = _loss_and_grads(model, tokens, labels, pos)
    compiled_loss2, _ = _loss_and_grads(model, tokens, labels, pos)
    wrapped = [hasattr(layer.forward, "_torchdynamo_orig_callable") for layer in model.decoder.layers]
    top = [type(model).forward is model.forward.__func__, type(model.decoder).forward is model.decoder.forward.__func__]
    return {
        "layers": len(model.decoder.layers),
        "compiled": n,
        "each_layer_compiled": all(wrapped),
        "model_and_block_eager": all(top),
        "loss_diff": float((compiled_loss - eager_loss).abs()),
        "loss_diff_second_call": float((compiled_loss2 - eager_loss).abs()),
        "grad_max_diff": max(float((compiled_grads[k] - eager_grads[k]).abs().max()) for k in eager_grads),
    }


def check_hoisted_gather_hooks() -> dict:
    """With overlap_param_gather, a compiled layer keeps one pre-hook (ours) and its submodules none of
    DDP's; forward and backward through DDP give the loss of the bare model."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    from trainer.model import compile_layers, hoist_param_gather_hooks, mask_padded_vocab

    model, _ = _model("torch")
    mask_padded_vocab(model, VOCAB)
    tokens, labels, pos = _batch()
    bare, _ = _loss_and_grads(model, tokens, labels, pos)
    compile_layers(model, backend="aot_eager")
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, use_distributed_optimizer=True, overlap_grad_reduce=True, overlap_param_gather=True
    )
    ddp = DistributedDataParallel(config=model.config, ddp_config=ddp_config, module=model)
    before = [sum(len(m._forward_pre_hooks) for m in layer.modules()) for layer in model.decoder.layers]
    n = hoist_param_gather_hooks(ddp, model)
    inner = sum(len(m._forward_pre_hooks) for layer in model.decoder.layers for m in layer.modules() if m is not layer)
    per_layer = [len(layer._forward_pre_hooks) for layer in model.decoder.layers]
    ddp.zero_grad_buffer()
    loss = ddp(tokens, pos, None, labels=labels).float().sum()
    loss.backward()
    ddp.finish_grad_sync()
    return {
        "hooked_layers": n,
        "hooks_before_per_layer": before,
        "inner_hooks_after": inner,
        "layer_hooks_after": per_layer,
        "loss_diff": float((loss.detach() - bare).abs()),
        "grad_buffer_nonzero": bool(sum(float(b.grad_data.abs().sum()) for b in ddp.buffers) > 0),
    }


def check_float8() -> dict:
    try:
        import torchao  # noqa: F401
    except ImportError:
        return {"skipped": "torchao is not installed"}
    from trainer.fp8 import LAYER_LINEARS, convert_to_float8

    model, _ = _model("torch")
    params_before = {n: id(p) for n, p in model.named_parameters()}
    keys_before = sorted(model.state_dict())
    n = convert_to_float8(model, "tensorwise")
    converted = []
    for layer in model.decoder.layers:
        for name, module in layer.named_modules():
            if name.rsplit(".", 1)[-1] in LAYER_LINEARS:
                f8 = getattr(module, "_float8_linear", None)
                converted.append(f8 is not None and f8.weight is module.weight and type(f8).__name__ == "Float8Linear")
    out = {
        "converted": n,
        "expected": len(LAYER_LINEARS) * len(model.decoder.layers),
        "all_share_weights": all(converted) and len(converted) == n,
        "params_same_objects": {n: id(p) for n, p in model.named_parameters()} == params_before,
        "state_dict_keys_same": sorted(model.state_dict()) == keys_before,
        "output_layer_untouched": not hasattr(model.output_layer, "_float8_linear"),
    }
    # torch builds with a CPU torch._scaled_mm run the float8 matmuls here too; others need a GPU
    tokens, labels, pos = _batch()
    bf16, _ = _model("torch")
    bf16 = bf16.bfloat16()
    ref = float(bf16(tokens, pos, None, labels=labels).float().sum())
    convert_to_float8(bf16, "tensorwise")
    try:
        loss = bf16(tokens, pos, None, labels=labels).float().sum()
        loss.backward()
    except Exception as e:  # noqa: BLE001 - no CPU float8 matmul in this torch build
        out["cpu_forward"] = {"ran": False, "why": f"{type(e).__name__}: {e}"[:300]}
        return out
    qkv = bf16.decoder.layers[0].self_attention.linear_qkv.weight
    out["cpu_forward"] = {
        "ran": True,
        "loss": float(loss),
        "bf16_loss": ref,
        "rel_diff": abs(float(loss) - ref) / abs(ref),
        "weight_grad_nonzero": qkv.grad is not None and bool(qkv.grad.abs().sum() > 0),
    }
    return out


CHECKS = {
    "padded_vocab": check_padded_vocab,
    "compile_layers": check_compile_layers,
    "hoisted_gather_hooks": check_hoisted_gather_hooks,
    "float8": check_float8,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--only", nargs="*", choices=list(CHECKS))
    args = ap.parse_args()
    from trainer.distributed import init_distributed, shutdown

    init_distributed(1, 1, seed=0)
    torch.set_num_threads(1)
    results = {}
    for name in args.only or CHECKS:
        try:
            results[name] = CHECKS[name]()
        except Exception:  # noqa: BLE001 - reported to the test
            results[name] = {"error": traceback.format_exc()}
    shutdown()
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
