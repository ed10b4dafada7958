"""Train a small byte-level BPE tokenizer (for demos and tests) and save it as an HF tokenizer folder."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from infra.corpus import TAG_TOKEN
from infra.log import get_logger

log = get_logger(__name__)
EOS_TOKEN = "<|endoftext|>"


@dataclass
class TrainTokenizerConfig:
    """``python -m datagen train-tokenizer``.

    Attributes:
        input: JSONL file(s) or folder to train on (null: the embedded default corpus).
        text_field: key of the text in each JSON line.
        output: folder for the HF tokenizer (tokenizer.json, tokenizer_config.json, ...).
        vocab_size: target vocabulary size including the 256 byte symbols and the special tokens.
        min_frequency: minimum pair frequency for a merge.
    """

    input: str | None = None
    text_field: str = "text"
    output: str = "out/tokenizer"
    vocab_size: int = 8192
    min_frequency: int = 2


def iter_jsonl_texts(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """Texts of every readable JSON line in a file or folder (bad lines are skipped here: this is
    only tokenizer training data; the run's reader quarantines them)."""
    import gzip

    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(rec, dict) and isinstance(rec.get(text_field), str) and rec[text_field].strip():
                    yield rec[text_field]


def train_bpe_tokenizer(
    texts: Iterable[str], output: str | Path, vocab_size: int = 8192, min_frequency: int = 2
) -> Path:
    """Train byte-level BPE on ``texts``; save an HF folder with EOS and the harmfulness tag as special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, TAG_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=None,
        additional_special_tokens=[TAG_TOKEN],
    )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    log.info("tokenizer with %d entries written to %s", len(fast), out)
    return out


def train_tokenizer(cfg: TrainTokenizerConfig) -> Path:
    from infra.paths import default_corpus

    src = cfg.input or str(default_corpus())
    if not Path(src).exists():
        raise FileNotFoundError(f"tokenizer training input not found: {src}")
    return train_bpe_tokenizer(iter_jsonl_texts(src, cfg.text_field), cfg.output, cfg.vocab_size, cfg.min_frequency)
