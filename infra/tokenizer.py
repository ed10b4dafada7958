"""Tokenizer helpers shared by datagen (tokenization), the trainer (vocab checks) and evalkit (tag id)."""

from __future__ import annotations

from pathlib import Path

from infra.corpus import TAG_TOKEN


class TokenizerError(ValueError):
    pass


def load_tokenizer(name_or_path: str | Path, add_tag: bool = True):
    """Load an HF tokenizer from a local folder (or a hub name where hubs are reachable).

    With ``add_tag`` the harmfulness tag is registered as one special token (a no-op when present).
    """
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; re-raise with the path
        raise TokenizerError(f"cannot load tokenizer from {name_or_path!r}: {e}") from e
    if add_tag and TAG_TOKEN not in tok.get_vocab():
        tok.add_special_tokens({"additional_special_tokens": [TAG_TOKEN]})
    if tok.eos_token_id is None:
        raise TokenizerError(f"tokenizer {name_or_path!r} has no EOS token")
    return tok


def tag_id(tok) -> int:
    """Id of the harmfulness tag; a clear error when the tokenizer lacks it."""
    tid = tok.get_vocab().get(TAG_TOKEN)
    if tid is None:
        raise TokenizerError(
            f"tokenizer has no '{TAG_TOKEN}' token: it was not built for tag-aware "
            "decoding (datagen adds it; pass a tokenizer from a corpus folder)"
        )
    return int(tid)
