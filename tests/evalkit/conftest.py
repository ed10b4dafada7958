"""evalkit fixtures: a tiny random Llama whose tokenizer carries the harmfulness tag, and a shared
SmolLM2-135M-Instruct ``HFModel`` (loaded once per test session)."""

import pytest


@pytest.fixture(scope="session")
def tiny_tag_model_dir(tmp_path_factory, smollm2_dir):
    """2-layer Llama (hidden 32) with SmolLM2's tokenizer plus ``<potentially unsafe content>``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from infra.tokenizer import load_tokenizer, tag_id

    out = tmp_path_factory.mktemp("tiny_tag_llama")
    tok = load_tokenizer(smollm2_dir, add_tag=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=0.3, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # make the tag a plausible next token so that the drop step matters
        model.lm_head.weight[tag_id(tok)] *= 3.0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    from evalkit.model import HFModel

    return HFModel(smollm2_dir)


@pytest.fixture(scope="session")
def prompts_dir(repo_root):
    return repo_root / "evalkit" / "data" / "prompts"


