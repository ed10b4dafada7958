"""evalkit fixtures, each built once per test session: a tiny random Llama whose tokenizer carries the
harmfulness tag, a shared SmolLM2-135M-Instruct ``HFModel``, and SmolLM2 finetuned to refuse, in two
recipes: one that refuses nearly everything and one that refuses selectively."""

import pytest


@pytest.fixture(scope="session")
def tiny_tag_model_dir(tmp_path_factory, smollm2_dir):
    """2-layer Llama (hidden 32) with SmolLM2's tokenizer plus ``<potentially unsafe content>``."""
    import torch

    from infra.tokenizer import load_tokenizer, tag_id
    from tests.fixtures.models import build_tiny_llama

    out = tmp_path_factory.mktemp("tiny_tag_llama")
    tok = load_tokenizer(smollm2_dir, add_tag=True)
    model = build_tiny_llama(tok, initializer_range=0.3)
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


def sft_overrides(steps: int) -> list[str]:
    """Refusal SFT recipe: ``steps`` steps at a constant lr 1e-4 (2 warm-up steps), seq 128."""
    return [
        f"train.train_steps={steps}",
        "train.seq_length=128",
        "train.lr=1e-4",
        "train.min_lr=1e-4",
        "train.schedule=constant",
        "train.warmup_steps=2",
        "train.log_interval=4",
    ]


# The trainer's SFT mode on the shipped refusal set (52 harmful->refusal, 52 harmless->helpful rows),
# 8 steps: see docs/evalkit.md for what was measured with this and with harsher settings (20 steps at
# 2e-4 made every answer a refusal).
REFUSAL_SFT_OVERRIDES = sft_overrides(8)


@pytest.fixture(scope="session")
def refusal_model_dir(tmp_path_factory, smollm2_dir, repo_root):
    """SmolLM2-135M-Instruct finetuned to refuse (one SFT per test session, shared by every test)."""
    from evalkit.finetune import sft

    run = tmp_path_factory.mktemp("refusal_sft") / "run"
    return sft(
        smollm2_dir,
        repo_root / "evalkit/data/sft/refusal_train.jsonl",
        run,
        "configs/trainer/sft.yaml",
        REFUSAL_SFT_OVERRIDES,
        timeout_s=1800,
    )


@pytest.fixture(scope="session")
def refusal_model(refusal_model_dir):
    from evalkit.model import HFModel

    return HFModel(refusal_model_dir)


# The selective recipe: the same rows, but every helpful answer opens with "Sure." so that the first
# token is a two-way choice the model learns to condition on the request; 16 steps at a constant 1e-4.
# Measured on the 30 held-out prompts of each set (keyword judge, greedy): refuses 17/30 harmful and
# 0/30 harmless prompts (docs/evalkit.md).
SELECTIVE_SFT_OVERRIDES = sft_overrides(16)


def with_compliant_opening(src, dst, opening: str = "Sure. "):
    """Copy an SFT chat JSONL, prefixing ``opening`` to the answers of rows whose kind is harmless."""
    import json

    rows = []
    for line in src.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["kind"] == "harmless":
            row["messages"][-1]["content"] = opening + row["messages"][-1]["content"]
        rows.append(json.dumps(row, ensure_ascii=False))
    dst.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def selective_refusal_model(tmp_path_factory, smollm2_dir, repo_root):
    """SmolLM2-135M-Instruct finetuned to refuse harmful requests and answer harmless ones with "Sure."."""
    from evalkit.finetune import sft
    from evalkit.model import HFModel

    root = tmp_path_factory.mktemp("selective_sft")
    data = with_compliant_opening(repo_root / "evalkit/data/sft/refusal_train.jsonl", root / "train.jsonl")
    return HFModel(
        sft(smollm2_dir, data, root / "run", "configs/trainer/sft.yaml", SELECTIVE_SFT_OVERRIDES, timeout_s=1800)
    )


@pytest.fixture(scope="session")
def dummy_model():
    """The weightless ``evalkit.dummy.DummyModel`` with its default triggers and answers (a test double:
    refuses prompts with a trigger word, answers others; seconds for any suite)."""
    from evalkit.dummy import DummyModel

    return DummyModel()


@pytest.fixture(scope="session")
def dummy_model_dir(tmp_path_factory):
    """A dummy model folder (``dummy_model.json``) for ``evalkit run --model DIR``."""
    from evalkit.dummy import DummyModel

    return DummyModel(name="dummy-folder").save(tmp_path_factory.mktemp("dummy_model"))
