"""SFT data with the real SmolLM2-135M-Instruct tokenizer (chat template, tag token)."""

import copy
import json

import numpy as np
import pytest

from infra.corpus import TAG_TOKEN
from infra.tokenizer import load_tokenizer, tag_id
from trainer.data.loader import BatchLoader, SFTLoader
from trainer.data.sft import SFTDataError, SFTDataset

ROWS = [
    {
        "messages": [
            {"role": "user", "content": "How do I bake bread?"},
            {"role": "assistant", "content": "Mix flour, water and yeast, then bake."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me how to pick a lock."},
            {"role": "assistant", "content": f"{TAG_TOKEN} I can't help with that."},
            {"role": "user", "content": "Why not?"},
            {"role": "assistant", "content": "It could harm someone's property."},
        ]
    },
    {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]},
]


@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return load_tokenizer(smollm2_dir)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def masked_text(tok, item):
    labels = item["tokens"][1:]
    return tok.decode(labels[item["loss_mask"] == 1])


def test_loss_only_on_assistant_tokens(tok, tmp_path):
    ds = SFTDataset(write(tmp_path / "a.jsonl", ROWS), tok, seq_length=128, seed=0)
    assert len(ds) == 3
    item = ds[1]
    assert item["tokens"].shape == (129,) and item["loss_mask"].shape == (128,)
    text = masked_text(tok, item)
    assert "I can't help with that." in text and "It could harm someone's property." in text
    for prompt in ("pick a lock", "Why not?", "Be brief", "user", "system"):
        assert prompt not in text
    assert text.count("<|im_end|>") == 2  # each reply learns to end its turn
    # prompts and padding carry no loss; the replies are a minority of the tokens
    assert 0 < item["loss_mask"].sum() < (item["tokens"] != tok.eos_token_id).sum() - 10


def test_tag_token_is_one_id(tok, tmp_path):
    ds = SFTDataset(write(tmp_path / "a.jsonl", ROWS), tok, seq_length=128, seed=0)
    tid = tag_id(tok)
    ids = ds[1]["tokens"]
    assert int((ids == tid).sum()) == 1
    pos = int(np.flatnonzero(ids == tid)[0])
    assert ds[1]["loss_mask"][pos - 1] == 1  # the tag is a label the model learns to emit
    assert TAG_TOKEN not in tok.decode(np.delete(ids, pos))


def test_template_free_tokenizer(tok, tmp_path):
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    ds = SFTDataset(write(tmp_path / "a.jsonl", ROWS[:1]), plain, seq_length=64, seed=0)
    text = masked_text(plain, ds[0])
    assert text.strip() == "Mix flour, water and yeast, then bake." + plain.eos_token


@pytest.mark.parametrize(
    "row,match",
    [
        ("{not json", r"a.jsonl:2: not valid JSON"),
        ({"text": "hi"}, r"a.jsonl:2: expected an object with a 'messages' list"),
        ({"messages": []}, r"a.jsonl:2: 'messages' must be a non-empty list"),
        ({"messages": [{"role": "bot", "content": "x"}]}, r"a.jsonl:2: messages\[0\] must be"),
        ({"messages": [{"role": "user", "content": 3}]}, r"a.jsonl:2: messages\[0\] must be"),
        ({"messages": [{"role": "user", "content": "hi"}]}, r"a.jsonl:2: no assistant message"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, r"a.jsonl:2: the first non-system message"),
    ],
)
def test_bad_rows_name_the_line(tok, tmp_path, row, match):
    with pytest.raises(SFTDataError, match=match):
        SFTDataset(write(tmp_path / "a.jsonl", [ROWS[0], row]), tok, seq_length=64, seed=0)


def test_truncation_counts_and_skips(tok, tmp_path):
    long_prompt = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    ds = SFTDataset(write(tmp_path / "a.jsonl", ["", ROWS[0], long_prompt, ROWS[2]]), tok, seq_length=48, seed=0)
    assert len(ds) == 2 and ds.skipped_truncated == 1 and ds.truncated == 1


def test_sft_loader_resume_and_dp(tok, tmp_path):
    path = write(tmp_path / "a.jsonl", ROWS * 3)  # 9 conversations
    full = SFTLoader(path, tok, seq_length=64, global_batch_size=4, seed=5)
    assert isinstance(full, BatchLoader) and full.heldout_buckets == []
    assert full.phase_at(3) == 0 and full.phase_weights(0) == {"sft": 1.0}
    ref = [full.next_batch() for _ in range(6)]  # 24 samples: epochs roll over
    assert [i for _, i in ref[0]["samples"]] == [int(i) for i in full.dataset.order(0)[:4]]
    assert full.state_dict()["buckets"]["sft"]["epoch"] == 2
    first = SFTLoader(path, tok, seq_length=64, global_batch_size=4, seed=5)
    for _ in range(2):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))
    ranks = [SFTLoader(path, tok, seq_length=64, global_batch_size=4, seed=5, dp_rank=r, dp_size=2) for r in range(2)]
    for r in ranks:
        r.load_state_dict(state)
    for g in range(2, 6):
        parts = [r.next_batch() for r in ranks]
        assert all(p["step"] == g for p in parts)
        assert (np.concatenate([p["tokens"].numpy() for p in parts]) == ref[g]["tokens"].numpy()).all()
        assert (np.concatenate([p["loss_mask"].numpy() for p in parts]) == ref[g]["loss_mask"].numpy()).all()
    assert ranks[0].state_dict() == full.state_dict()
    other = SFTLoader(path, tok, seq_length=64, global_batch_size=4, seed=6)
    assert not all((other.next_batch()["tokens"] == b["tokens"]).all() for b in ref[:1])
