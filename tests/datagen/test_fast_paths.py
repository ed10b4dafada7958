"""The faster stage-1 paths give exactly what the plain ones give: word boundaries of the tag step, token
ids of the tokenizer loaded with ``tokenizers`` alone, and the pending JSONL records."""

from __future__ import annotations

import json
import random
import re
import sys

from datatrove.data import Document, Media
from datatrove.pipeline.writers.jsonl import JsonlWriter

from datagen.steps.route import document_record
from datagen.steps.tokenize import BucketTokenWriter, FastTokenizer
from datagen.tagging import count_words, inject_tags_counted, word_bounds
from infra.corpus import TAG_TOKEN
from tests.datagen.conftest import FOREIGN, make_docs

# every kind of character the word splitter must get right: ASCII and Unicode whitespace, astral
# characters, a lone surrogate, the tag token's own characters
ALPHABET = [*"abc xyz", " ", "\t", "\n", "\u00a0", "\u3000", "\u2028", "\x1c", "\x85", "é", "😀", "\ud800", "<", "|"]


def _reference(text: str, p: float, seed: int, doc_id: str) -> tuple[str, int, int]:
    """Algorithm 1 written the plain way: the tag before the whitespace run that precedes each drawn word."""
    from datagen.tagging import doc_rng

    starts = [m.start() for m in re.finditer(r"\S+", text)]
    if not starts or p == 0.0:
        return text, 0, len(starts)
    hits = [i for i, u in enumerate(doc_rng(seed, doc_id).random(len(starts))) if u < p]
    out, prev = [], 0
    for i in hits:
        cut = starts[i]
        while cut > prev and text[cut - 1].isspace():
            cut -= 1
        out += [text[prev:cut], TAG_TOKEN]
        prev = cut
    return "".join(out) + text[prev:], len(hits), len(starts)


def test_word_bounds_and_tags_equal_the_plain_algorithm():
    assert max(c for c in range(sys.maxunicode + 1) if chr(c).isspace()) <= 0x3000  # what word_bounds assumes
    rng = random.Random(0)
    for i in range(3000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 60)))
        starts, ends = word_bounds(text)
        assert [(int(a), int(b)) for a, b in zip(starts, ends)] == [m.span() for m in re.finditer(r"\S+", text)]
        assert count_words(text) == len(starts)
        for p in (0.0, 0.3, 1.0):
            assert inject_tags_counted(text, p, 5, f"d{i}") == _reference(text, p, 5, f"d{i}")


def test_fast_tokenizer_gives_the_ids_of_the_hf_tokenizer(tmp_path, tokenizer_dir):
    from infra.tokenizer import load_tokenizer

    hf = load_tokenizer(tokenizer_dir, add_tag=True)
    hf.save_pretrained(str(tmp_path / "tok"))  # a corpus tokenizer folder, as datagen writes it
    fast = FastTokenizer.load(tmp_path / "tok")
    assert fast is not None and fast.eos_token_id == hf.eos_token_id and len(fast) == len(hf)
    texts = [d["text"] for d in make_docs(20, seed=5)] + FOREIGN + [f"a {TAG_TOKEN} b", "", "  x\u3000y  "]
    texts[3] = texts[3].replace(" ", f" {TAG_TOKEN} ", 2)
    expect = [hf(t, add_special_tokens=False)["input_ids"] + [hf.eos_token_id] for t in texts]
    assert TAG_TOKEN in texts[3] and len(expect[3]) > 10
    for tok in (fast, hf):  # the writer's backend path, from the fast and from the HF tokenizer
        w = BucketTokenWriter(tmp_path / "corpus", tok, rank=0)
        assert [a.tolist() for a in w.encode(texts)] == expect
    # a folder without a config naming the EOS token is read by transformers instead
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps({"bos_token": "x"}))
    assert FastTokenizer.load(tmp_path / "tok") is None


def test_pending_record_is_what_datatrove_writes(tmp_path):
    writer = JsonlWriter(str(tmp_path), compression=None)
    docs = [
        Document(text="some text", id="a", metadata={"safety_score": 3, "route": "rephrase", "nested": {"x": [1]}}),
        Document(text="no metadata", id="b"),
        Document(text="", id="c", metadata={"k": 0}),
        Document(text="with media", id="d", media=[Media(id="m", type=0, url="u")]),
    ]
    for doc in docs:
        assert document_record(writer, doc) == writer._default_adapter(doc)
