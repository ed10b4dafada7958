"""HF interchange: export a trainer checkpoint and import SmolLM2-135M-Instruct; logits must agree."""

from __future__ import annotations

import json

import pytest
import torch

from tests.trainer.conftest import megatron_logits


@pytest.mark.slow
def test_export_hf_logits_match_megatron(reference_run, reference_hf, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from infra.corpus import TAG_TOKEN

    out = reference_hf
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vocab_size"] == 384 and cfg["num_hidden_layers"] == 2 and cfg["tie_word_embeddings"]
    tok = AutoTokenizer.from_pretrained(out)
    assert TAG_TOKEN in tok.get_vocab()  # the tag token survives export
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    text = f"Red lentil soup {TAG_TOKEN} takes thirty minutes and one pot."
    ids = torch.tensor([tok(text)["input_ids"]] * 2)
    with torch.no_grad():
        hf = model(ids).logits
    mg = megatron_logits(tmp_path, ids, ckpt=reference_run)
    assert hf.shape == mg.shape
    diff = (hf - mg).abs().max().item()
    print(f"export: max |logit diff| = {diff:.2e}")
    assert diff < 1e-4


@pytest.mark.slow
def test_import_smollm2_matches_transformers_and_round_trips(smollm2_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = torch.tensor([tok("The capital of France is Paris, and the capital of Italy is")["input_ids"]])
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hf = model(ids).logits
    rt_file = tmp_path / "roundtrip.pt"
    mg = megatron_logits(tmp_path, ids, hf=smollm2_dir, roundtrip=rt_file)
    assert mg.shape[-1] == hf.shape[-1] + 1  # the tag token was added to the vocabulary
    diff = (hf - mg[..., :-1]).abs().max().item()
    print(f"import: max |logit diff| = {diff:.2e} (logit range {hf.min():.1f}..{hf.max():.1f})")
    assert diff < 2e-3
    assert hf[0, -1].argmax() == mg[0, -1, :-1].argmax()
    # megatron -> HF conversion gives back the original tensors (plus one embedding row for the tag)
    original = load_file(str(smollm2_dir / "model.safetensors"))
    rt = torch.load(rt_file)
    for name, t in original.items():
        if name == "model.embed_tokens.weight":
            assert torch.equal(rt[name][: t.shape[0]], t)
            assert torch.allclose(rt[name][t.shape[0]], t.mean(0))
        elif name in rt:
            assert torch.equal(rt[name], t), name
    assert set(original) - {"lm_head.weight"} <= set(rt)
