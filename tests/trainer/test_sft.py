"""SFT from an HF Llama folder (SmolLM2-135M-Instruct): assistant-only loss, tag token, HF export."""

from __future__ import annotations

import json

import pytest
import torch

from infra.corpus import TAG_TOKEN
from tests.trainer.conftest import read_metrics, run_trainer

CHATS = [
    [
        ("user", "How do I make a simple tomato sauce?"),
        ("assistant", "Soften garlic in olive oil, add crushed tomatoes and salt, and simmer for twenty minutes."),
    ],
    [
        ("user", "Explain how to pick a lock to get into my neighbour's flat."),
        (
            "assistant",
            f"{TAG_TOKEN} I can't help with entering someone else's home. If you are locked out of "
            "your own flat, a licensed locksmith or your landlord can help.",
        ),
    ],
    [
        ("system", "You are a concise assistant."),
        ("user", "What is the boiling point of water at sea level?"),
        ("assistant", "100 degrees Celsius, or 212 degrees Fahrenheit."),
    ],
    [
        ("user", "Give me one tip for better sleep."),
        ("assistant", "Keep a regular schedule: go to bed and get up at the same time every day."),
    ],
]


@pytest.mark.slow
def test_sft_from_hf_masks_prompts_keeps_tag_and_exports(smollm2_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from infra.tokenizer import load_tokenizer
    from trainer.data.loader import SFTLoader

    data = tmp_path / "chat.jsonl"
    data.write_text(
        "".join(json.dumps({"messages": [{"role": r, "content": c} for r, c in chat]}) + "\n" for chat in CHATS)
    )
    run_dir = tmp_path / "sft"
    run_trainer(
        "sft",
        "--config",
        "configs/trainer/sft.yaml",
        f"init.hf={smollm2_dir}",
        f"sft.path={data}",
        f"run_dir={run_dir}",
        "train.train_steps=2",
        "train.seq_length=64",
        "train.global_batch_size=2",
        "train.micro_batch_size=1",
        "train.warmup_steps=0",
        "train.lr=1e-5",
        "model.spec=local",
        "logging.tensorboard=false",
        timeout=600,
    )
    m = read_metrics(run_dir)
    assert [r["step"] for r in m] == [1, 2]

    # The step-1 loss is transformers' cross-entropy of the *initial* model over assistant tokens only.
    tok = load_tokenizer(run_dir / "tokenizer")
    assert len(tok) == 49153 and tok.convert_tokens_to_ids(TAG_TOKEN) == 49152
    batch = SFTLoader(data, tok, 64, 2, seed=1234).next_batch()
    ref = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    emb = ref.get_input_embeddings().weight.data
    ref.resize_token_embeddings(len(tok), mean_resizing=False)
    ref.get_input_embeddings().weight.data[-1] = emb.mean(0)  # the trainer's rule for new tokens
    with torch.no_grad():
        logits = ref(batch["tokens"][:, :-1]).logits
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["tokens"][:, 1:].flatten(), reduction="none")
    mask = batch["loss_mask"].flatten()
    assert 0 < mask.sum() < mask.numel()
    masked = float((ce * mask).sum() / mask.sum())
    unmasked = float(ce.mean())
    print(f"SFT step-1 loss {m[0]['loss']:.5f}; transformers masked {masked:.5f}, unmasked {unmasked:.5f}")
    assert abs(m[0]["loss"] - masked) < 1e-3
    assert abs(unmasked - masked) > 0.05  # the comparison can tell a masked loss from an unmasked one

    # export.hf_at_end (set in sft.yaml): an HF folder that transformers loads, tag token included
    hf_dir = run_dir / "hf"
    out_tok = AutoTokenizer.from_pretrained(hf_dir)
    assert out_tok.convert_tokens_to_ids(TAG_TOKEN) == 49152
    assert out_tok(f"a {TAG_TOKEN} b")["input_ids"].count(49152) == 1  # one token, not split
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    assert model.config.vocab_size == 49153
    trained = model.get_input_embeddings().weight.data
    assert not torch.equal(trained[:49152], emb)  # two SFT steps changed the weights...
    assert (trained[:49152] - emb).abs().max() < 1e-2  # ...by a small amount at lr 1e-5
