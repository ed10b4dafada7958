"""Chat SFT data: conversations tokenized with the tokenizer's chat template, loss on assistant tokens.

Input: JSONL, one object per line, ``{"messages": [{"role": "system"|"user"|"assistant",
"content": "..."}, ...]}``. A conversation may start with system messages, then needs a user message
before the first assistant message and at least one assistant message. Blank lines are skipped. Any
other malformed line is an error naming ``file:line`` (bad SFT data is better fixed than silently
thinned).

Rendering: the tokenizer's chat template when it has one. The template is rendered for the whole
conversation, and for each assistant turn the text before it (with the generation prompt) and up to
its end is rendered too; the characters in between (the reply and the template's end-of-turn marker)
are the assistant's, and tokens that overlap them get loss. Tokenizers without a
template use ``"<role>: <content>\\n"`` per message, with the EOS token after each assistant reply
(reply and EOS get loss).

Each conversation becomes one sample: ``seq_length + 1`` tokens, cut at the end when longer, padded
with EOS (no loss) when shorter. ``loss_mask[j]`` belongs to the label ``tokens[j + 1]``.
Conversations whose assistant tokens all fall beyond the cut are skipped, counted and logged.
The harmfulness tag stays one token: it is a special token of tokenizers built by datagen
(``infra.tokenizer.load_tokenizer`` adds it when a path is given).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from infra.log import get_logger
from trainer.data.shuffle import epoch_permutation

__all__ = ["SFTDataset", "SFTDataError"]

log = get_logger(__name__)
ROLES = ("system", "user", "assistant")


class SFTDataError(ValueError):
    """A malformed SFT row; the message names ``file:line``."""


def _check_row(obj, where: str) -> list[dict]:
    if not isinstance(obj, dict) or "messages" not in obj:
        raise SFTDataError(f"{where}: expected an object with a 'messages' list")
    msgs = obj["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise SFTDataError(f"{where}: 'messages' must be a non-empty list")
    for k, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise SFTDataError(
                f"{where}: messages[{k}] must be {{'role': one of {list(ROLES)}, 'content': str}}, got {str(m)[:120]}"
            )
    roles = [m["role"] for m in msgs]
    if "assistant" not in roles:
        raise SFTDataError(f"{where}: no assistant message (nothing to learn from)")
    first = next(r for r in roles if r != "system")
    if first != "user":
        raise SFTDataError(f"{where}: the first non-system message must come from the user, got '{first}'")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


class SFTDataset:
    """Tokenized chat conversations with assistant-only loss masks.

    Args:
        jsonl_path: the chat JSONL file.
        tokenizer: an HF tokenizer (fast, for character offsets) or a path for
            ``infra.tokenizer.load_tokenizer``.
        seq_length: tokens per sample the model sees; samples carry ``seq_length + 1`` tokens.
        seed: seeds ``order(epoch)``, the per-epoch permutation of the conversations.

    Attributes:
        skipped_truncated: conversations dropped because no assistant token survived the cut.
        truncated: conversations cut to ``seq_length + 1`` tokens (kept).
    """

    def __init__(self, jsonl_path, tokenizer, seq_length: int, seed: int):
        if isinstance(tokenizer, (str, Path)):
            from infra.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(tokenizer)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("SFTDataset needs a fast tokenizer (character offsets locate the assistant turns)")
        self.path = Path(jsonl_path)
        self.tokenizer = tokenizer
        self.seq_length = int(seq_length)
        self.seed = int(seed)
        self.pad_id = int(tokenizer.eos_token_id)
        self.truncated = 0
        self.skipped_truncated = 0
        self._rows: list[tuple[np.ndarray, np.ndarray]] = []
        if not self.path.is_file():
            raise FileNotFoundError(f"SFT data not found: {self.path}")
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{self.path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SFTDataError(f"{where}: not valid JSON: {e}") from None
                ids, mask = self.encode(_check_row(obj, where), where)
                if ids.size > self.seq_length + 1:
                    self.truncated += 1
                    ids, mask = ids[: self.seq_length + 1], mask[: self.seq_length + 1]
                if not mask[1:].any():
                    self.skipped_truncated += 1
                    continue
                self._rows.append((ids, mask))
        if self.skipped_truncated:
            log.warning(
                "%s: skipped %d conversations whose assistant replies start after %d tokens",
                self.path,
                self.skipped_truncated,
                self.seq_length + 1,
            )
        if not self._rows:
            raise SFTDataError(f"{self.path}: no usable conversation")

    def encode(self, messages: list[dict], where: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Token ids and a 0/1 per-token assistant mask for one conversation."""
        text, spans = self._render(messages, where)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        mask = np.zeros(ids.size, dtype=np.bool_)
        for a, b in spans:
            # overlap, not containment: a token may merge the template's space with the reply's first word
            mask |= (offsets[:, 1] > a) & (offsets[:, 0] < b)
        return ids, mask

    def _render(self, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
        tok = self.tokenizer
        spans = []
        if getattr(tok, "chat_template", None):

            def render(msgs, gen=False):
                return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

            text = render(messages)
            for i, m in enumerate(messages):
                if m["role"] != "assistant":
                    continue
                before, upto = render(messages[:i], gen=True), render(messages[: i + 1])
                if not (upto.startswith(before) and text.startswith(upto)):
                    raise SFTDataError(
                        f"{where}: the tokenizer's chat template does not render conversations "
                        "prefix by prefix; cannot locate the assistant turns"
                    )
                spans.append((len(before), len(upto)))
            return text, spans
        eos = tok.eos_token
        parts, pos = [], 0
        for m in messages:
            head = f"{m['role']}: "
            body = m["content"] + (eos if m["role"] == "assistant" else "")
            if m["role"] == "assistant":
                spans.append((pos + len(head), pos + len(head) + len(body)))
            piece = head + body + "\n"
            parts.append(piece)
            pos += len(piece)
        return "".join(parts), spans

    def __len__(self) -> int:
        return len(self._rows)

    def order(self, epoch: int) -> np.ndarray:
        """The seeded permutation of conversation indices for ``epoch``."""
        return epoch_permutation(self.seed, "sft", epoch, len(self))

    def __getitem__(self, i: int) -> dict:
        """``tokens``: int64 ``[seq_length + 1]``; ``loss_mask``: float32 ``[seq_length]``."""
        ids, mask = self._rows[i]
        tokens = np.full(self.seq_length + 1, self.pad_id, dtype=np.int64)
        tokens[: ids.size] = ids
        full = np.zeros(self.seq_length + 1, dtype=np.float32)
        full[: mask.size] = mask
        return {"tokens": tokens, "loss_mask": full[1:].copy()}
