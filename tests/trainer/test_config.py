"""Config validation, presets and spec selection (no training)."""

import pytest

from infra.config import ConfigError, load_config
from trainer.config import TrainerConfig


def test_shipped_configs_load(repo_root):
    for name in ("tiny", "smollm2_135m", "smollm2_360m", "smollm2_1.7b"):
        cfg = load_config(TrainerConfig, repo_root / "configs" / "trainer" / f"{name}.yaml")
        assert cfg.train.global_batch_size % cfg.train.micro_batch_size == 0
    cfg = load_config(TrainerConfig, repo_root / "configs/trainer/sft.yaml", ["sft.path=x.jsonl", "init.hf=d"])
    assert cfg.sft_mode and cfg.export.hf_at_end


def test_bad_keys_and_values_name_the_key(repo_root):
    path = repo_root / "configs/trainer/tiny.yaml"
    with pytest.raises(ConfigError, match="train.lrr"):
        load_config(TrainerConfig, path, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="global_batch_size"):
        load_config(TrainerConfig, path, ["train.global_batch_size=6", "train.micro_batch_size=4"])
    with pytest.raises(ConfigError, match="model.spec"):
        load_config(TrainerConfig, path, ["model.spec=fast"])
    with pytest.raises(ConfigError, match="data.corpus"):
        load_config(TrainerConfig, path, ["data.corpus="])


def test_peak_tflops_and_validation_fields(repo_root, tmp_path):
    from infra.config import save_config, to_dict

    path = repo_root / "configs/trainer/tiny.yaml"
    cfg = load_config(TrainerConfig, path)
    assert cfg.train.peak_tflops == 989.0 and cfg.validation.interval == 0 and not cfg.validation.enabled
    cfg = load_config(TrainerConfig, path, ["train.peak_tflops=312", "validation.interval=50"])
    assert to_dict(cfg)["train"]["peak_tflops"] == 312.0
    assert to_dict(cfg)["validation"] == {"interval": 50, "samples_per_bucket": 8, "at_end": True}
    save_config(cfg, tmp_path / "config.yaml")  # the run's config.yaml keeps both, and loads back
    again = load_config(TrainerConfig, tmp_path / "config.yaml")
    assert again.train.peak_tflops == 312.0 and again.validation.enabled
    with pytest.raises(ConfigError, match="train.peak_tflops"):
        load_config(TrainerConfig, path, ["train.peak_tflops=0"])
    with pytest.raises(ConfigError, match="validation.interval"):
        load_config(TrainerConfig, path, ["validation.interval=-1"])
    with pytest.raises(ConfigError, match="validation.samples_per_bucket"):
        load_config(TrainerConfig, path, ["validation.samples_per_bucket=0"])
    with pytest.raises(ConfigError, match="not supported in SFT mode"):
        load_config(
            TrainerConfig,
            repo_root / "configs/trainer/sft.yaml",
            ["sft.path=x.jsonl", "init.hf=d", "validation.interval=10"],
        )


def test_inline_and_file_curricula_resolve(repo_root):
    from trainer.config import resolve_curriculum

    c = resolve_curriculum("configs/trainer/curricula/intervention_20.yaml")
    assert c.phases[1].start == pytest.approx(0.2)
    c = resolve_curriculum({"phases": [{"start": 0.0, "weights": {"raw": 1.0}}]})
    assert c.phases[0].weights == {"raw": 1.0}
    with pytest.raises(ConfigError):
        resolve_curriculum("configs/trainer/curricula/missing.yaml")


def test_presets_and_padding():
    from trainer.model import PRESETS, count_parameters, padded_vocab_size

    assert padded_vocab_size(49153, 128, 1) == 49280
    assert padded_vocab_size(49153, 128, 2) == 49408
    # SmolLM2 sizes as published (tied embeddings, 49152 vocab)
    assert abs(count_parameters(PRESETS["smollm2-135m"], 49152) - 134.5e6) < 1e6
    assert abs(count_parameters(PRESETS["smollm2-360m"], 49152) - 361.8e6) < 2e6
    assert abs(count_parameters(PRESETS["smollm2-1.7b"], 49152) - 1.71e9) < 2e7


def test_spec_selection_on_cpu():
    from trainer.layer_specs import resolve_spec_name

    assert resolve_spec_name("auto") == "local"  # no CUDA here
    assert resolve_spec_name("torch") == "torch"
    with pytest.raises(RuntimeError, match="Transformer-Engine"):
        resolve_spec_name("te")
    with pytest.raises(ValueError):
        resolve_spec_name("bogus")


def test_sdpa_core_attention_matches_explicit_causal_softmax():
    import torch
    from megatron.core.transformer.enums import AttnMaskType

    from trainer.layer_specs import SDPACoreAttention
    from trainer.model import resolve_arch, transformer_config

    arch = resolve_arch("tiny")
    cfg = transformer_config(arch)
    attn = SDPACoreAttention(cfg, 1, AttnMaskType.causal, "self")
    s, b, h, g, d = 7, 2, 4, 2, 16
    q, k, v = torch.randn(s, b, h, d), torch.randn(s, b, g, d), torch.randn(s, b, g, d)
    out = attn(q, k, v)
    assert out.shape == (s, b, h * d)
    # reference: expand KV groups, masked softmax
    kk = k.repeat_interleave(h // g, dim=2)
    vv = v.repeat_interleave(h // g, dim=2)
    scores = torch.einsum("sbhd,tbhd->bhst", q, kk) / d**0.5
    scores = scores.masked_fill(torch.triu(torch.ones(s, s, dtype=torch.bool), 1), float("-inf"))
    ref = torch.einsum("bhst,tbhd->sbhd", scores.softmax(-1), vv).reshape(s, b, h * d)
    assert torch.allclose(out, ref, atol=1e-5)
