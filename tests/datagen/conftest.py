"""Tiny corpora for the datagen tests (built in a temp folder; nothing needs to exist beforehand)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

# English sentences per safety level, so that fastText language ID keeps them and a classifier can learn.
LEVEL_SENTENCES = {
    0: [
        "The garden needs water every morning during the dry summer weeks.",
        "Our class visited the museum and learned about old ships and maps.",
        "Mix the flour with the butter slowly and bake the bread for forty minutes.",
        "The library opens at nine and the children read picture books together.",
    ],
    1: [
        "He swore loudly at the referee and the crowd laughed at the damn mistake.",
        "The film has some crude jokes and a few adult themes about dating.",
        "She was annoyed and muttered a mild curse word under her breath.",
    ],
    2: [
        "The forum post called the neighbours idiots and gave casual advice on skipping medicine.",
        "People in the comments insulted each other as morons over the election.",
        "He told everyone to stop taking their pills without asking any doctor.",
    ],
    3: [
        "The story mentions a stabbing in the alley and a gang carrying knives.",
        "Some jokes in the show repeat ugly stereotypes about immigrants and women.",
        "The article briefly describes how the suspect bought a gun before the robbery.",
    ],
    4: [
        "The manifesto praises violent extremists and urges readers to attack the enemy group.",
        "Detailed steps explain how to break into cars and steal them without being caught.",
        "The post encourages teenagers to hurt themselves and hide the cuts from parents.",
    ],
    5: [
        "Step by step instructions for building a pipe bomb to kill people at the station.",
        "We will find you and murder your family, this is a real threat against you.",
        "Here is the leaked home address and bank password of the journalist, go hurt her.",
    ],
}
FOREIGN = [
    "Le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville de Paris.",
    "Der Hund spielt im Garten und die Kinder lachen, während die Sonne über dem Dorf scheint.",
]


def make_docs(n: int, seed: int = 0, levels=(0, 1, 2, 3, 4, 5), sentences: int = 6) -> list[dict]:
    """``n`` English documents with a score label drawn uniformly from ``levels``."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        s = levels[i % len(levels)]
        pool = LEVEL_SENTENCES[s] + (LEVEL_SENTENCES[0] if s else [])
        parts = [rng.choice(LEVEL_SENTENCES[s])] + [rng.choice(pool) for _ in range(sentences - 1)]
        rng.shuffle(parts)
        docs.append(
            {
                "id": f"doc-{seed}-{i:05d}",
                "text": " ".join(parts) + f" Note number {i}.",
                "score": s,
                "reason": f"synthetic level {s}",
            }
        )
    return docs


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for r in records:
            f.write(r if isinstance(r, bytes) else (json.dumps(r) + "\n").encode("utf-8"))
    return path


@pytest.fixture(scope="session")
def labels_file(tmp_path_factory) -> Path:
    """600 labelled documents (100 per level) for classifier training."""
    return write_jsonl(tmp_path_factory.mktemp("labels") / "labels.jsonl", make_docs(600, seed=1))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from datagen.tokenizer_train import train_bpe_tokenizer

    texts = [d["text"] for d in make_docs(300, seed=2)] + FOREIGN
    return train_bpe_tokenizer(texts, tmp_path_factory.mktemp("tok") / "tokenizer", vocab_size=1024)


@pytest.fixture(scope="session")
def messy_input(tmp_path_factory) -> dict:
    """Two input files (one gzipped) with every kind of bad record, plus what the test should expect."""
    d = tmp_path_factory.mktemp("input")
    good_a = make_docs(60, seed=3)
    good_b = make_docs(40, seed=4)
    long_text = "word " * 3000
    a = [
        *good_a[:30],
        b'{"id": "bad-json", "text": "unterminated\n',
        b'{"id": "bad-utf8", "text": "caf\xe9 au lait"}\n',
        {"id": "no-text", "body": "the text is under another key", "score": 0},
        {"id": "empty", "text": "", "score": 0},
        {"id": "blank", "text": "   \n\t ", "score": 0},
        {"id": "too-long", "text": long_text, "score": 0},
        b'["not", "an", "object"]\n',
        {"id": "int-text", "text": 42, "score": 0},
        *good_a[30:],
        {"id": "dup-of-first", "text": good_a[0]["text"], "score": good_a[0]["score"]},
        {"id": "french", "text": " ".join([FOREIGN[0]] * 3), "score": 0},
        {"id": "german", "text": " ".join([FOREIGN[1]] * 3), "score": 0},
    ]
    write_jsonl(d / "part-a.jsonl", a)
    with gzip.open(d / "part-b.jsonl.gz", "wb") as f:
        for r in good_b:
            f.write((json.dumps(r) + "\n").encode())
    (d / "part-c.jsonl.gz").write_bytes(b"this is not gzip data at all")
    return {
        "dir": d,
        "good": good_a + good_b,
        "read": len(a) + len(good_b) + 1,
        "quarantine": {
            "malformed_json": 1,
            "invalid_utf8": 1,
            "missing_text": 1,
            "empty_text": 2,
            "too_long": 1,
            "not_an_object": 1,
            "text_not_string": 1,
            "unreadable_file": 1,
        },
        "dropped": {"language": 2, "exact_dedup": 1},
    }


@pytest.fixture(scope="session")
def fasttext_classifier(labels_file, tmp_path_factory) -> Path:
    from datagen.classifier import TrainClassifierConfig, train_classifier

    out = tmp_path_factory.mktemp("clf") / "fasttext"
    train_classifier(TrainClassifierConfig(labels=str(labels_file), output=str(out), backend="fasttext"))
    return out
