"""Algorithm 1: realised rate, no tags below the threshold, determinism, words never split."""

from __future__ import annotations

import math
import random
import re

import pytest
from datatrove.data import Document

from datagen.steps import Router, TagInjector
from datagen.tagging import count_words, inject_tags, neutralize_literal_tags
from infra.corpus import TAG_TOKEN

WORDS = "the a safety model web text harm weapon kitchen river blue quick fox jumps over lazy dog".split()


def _text(rng: random.Random, n: int) -> str:
    seps = [" ", " ", " ", "\n", "  ", "\t", ", "]
    return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(n)).strip()


def _binomial_99(n: int, p: float) -> tuple[float, float]:
    half = 2.5758 * math.sqrt(n * p * (1 - p))
    return n * p - half, n * p + half


def test_realised_rate_in_99pct_binomial_interval():
    rng = random.Random(0)
    total_words = total_tags = 0
    for i in range(250):  # 250 documents x 480 words = 120k words
        text = _text(rng, 480)
        _, n = inject_tags(text, 0.05, seed=7, doc_id=f"d{i}")
        total_words += count_words(text)
        total_tags += n
    assert total_words >= 100_000
    lo, hi = _binomial_99(total_words, 0.05)
    assert lo <= total_tags <= hi, (total_tags, lo, hi)


def test_tag_count_matches_text_and_words_never_split():
    rng = random.Random(1)
    text = _text(rng, 2000)
    tagged, n = inject_tags(text, 0.2, seed=3, doc_id="x")
    assert tagged.count(TAG_TOKEN) == n > 0
    assert tagged.replace(TAG_TOKEN, "") == text  # only insertions, nothing else changed
    # every tag sits at a word boundary: followed by whitespace or by the very first word
    # every tag sits between a word's end and the whitespace before the next word (or at the very start)
    for m in re.finditer(re.escape(TAG_TOKEN), tagged):
        if m.start() > 0:
            assert not tagged[m.start() - 1].isspace() and tagged[m.end()].isspace()
    words = text.split()
    assert tagged.replace(TAG_TOKEN, " ").split() == words


def test_deterministic_by_seed_and_doc_id():
    text = _text(random.Random(2), 3000)
    a = inject_tags(text, 0.05, seed=11, doc_id="doc-1")
    assert inject_tags(text, 0.05, seed=11, doc_id="doc-1") == a
    assert inject_tags(text, 0.05, seed=12, doc_id="doc-1") != a
    assert inject_tags(text, 0.05, seed=11, doc_id="doc-2") != a


def test_edge_probabilities():
    text = "one two  three\nfour"
    assert inject_tags(text, 0.0, 1, "d") == (text, 0)
    tagged, n = inject_tags(text, 1.0, 1, "d")
    assert n == 4
    assert tagged == f"{TAG_TOKEN}one{TAG_TOKEN} two{TAG_TOKEN}  three{TAG_TOKEN}\nfour"
    assert inject_tags("", 0.5, 1, "d") == ("", 0)
    with pytest.raises(ValueError):
        inject_tags(text, 1.5, 1, "d")


def test_literal_tag_strings_are_neutralised():
    text = f"copy of {TAG_TOKEN} from a web page"
    out, n = neutralize_literal_tags(text)
    assert n == 1 and TAG_TOKEN not in out


def _docs(scores):
    rng = random.Random(4)
    return [Document(text=_text(rng, 400), id=f"d{i}", metadata={"safety_score": s}) for i, s in enumerate(scores)]


def test_injector_step_never_tags_below_threshold():
    docs = list(TagInjector(p=0.5, min_score=3, seed=1)(_docs([0, 1, 2, 3, 4, 5] * 5)))
    for d in docs:
        s = d.metadata["safety_score"]
        if s < 3:
            assert TAG_TOKEN not in d.text and d.metadata.get("bucket") is None
        else:
            assert d.text.count(TAG_TOKEN) == d.metadata["harm_tags"] > 0 and d.metadata["bucket"] == "tagged"
    with pytest.raises(ValueError):
        TagInjector(min_score=0)


def test_injector_independent_of_task_layout():
    docs = _docs([4] * 10)
    whole = {d.id: d.text for d in TagInjector(p=0.1, seed=9)(docs)}
    halves = {}
    for part in (_docs([4] * 10)[:5], _docs([4] * 10)[5:][::-1]):
        halves.update({d.id: d.text for d in TagInjector(p=0.1, seed=9)(part, rank=1, world_size=2)})
    assert halves == whole


@pytest.mark.parametrize(
    "rephrase_min,refusal_min,expect",
    [
        (1, 4, ["raw", "rephrase", "rephrase", "rephrase", "refusal", "refusal"]),
        (2, 5, ["raw", "raw", "rephrase", "rephrase", "rephrase", "refusal"]),
        (1, 6, ["raw", "rephrase", "rephrase", "rephrase", "rephrase", "rephrase"]),
    ],
)
def test_router_thresholds(rephrase_min, refusal_min, expect):
    docs = list(Router(rephrase_min, refusal_min)(_docs(range(6))))
    assert [d.metadata["route"] for d in docs] == expect
    assert [d.metadata["bucket"] for d in docs] == ["raw" if r == "raw" else None for r in expect]


def test_tags_keep_word_tokens(tokenizer_dir):
    from infra.tokenizer import load_tokenizer, tag_id

    tok = load_tokenizer(tokenizer_dir)
    text = _text(random.Random(5), 300)
    tagged, n = inject_tags(text, 0.1, 1, "t")
    plain = tok(text, add_special_tokens=False)["input_ids"]
    ids = tok(tagged, add_special_tokens=False)["input_ids"]
    tid = tag_id(tok)
    assert ids.count(tid) == n
    assert [i for i in ids if i != tid] == plain
