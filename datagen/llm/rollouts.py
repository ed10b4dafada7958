"""The transformations as datatrove rollout functions: ``async rollout(doc, generate, **ctx) -> dict``.

Every rollout returns ``{"outputs": [...], "exchanges": [...]}``: one output per produced text (bucket,
status ``ok`` or ``quarantined``, text or reason and raw answer) and every request/response pair sent for
the document, so the output JSONL is a complete audit log. A rollout never returns ``None`` (datatrove
would drop the document silently) and lets datatrove's ``ServerError`` through (the task must fail).

Retries are deterministic: attempt ``a`` of document ``d`` uses a sampling seed derived from
``(seed, d, a)`` and, for rephrasing, the ``a``-th style of a per-document seeded order, so a resumed run
sends identical payloads and datatrove's request cache replays them instead of resending.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from dataclasses import dataclass, field

from datagen.llm import prompts as P

# vLLM chat parameters that continue a final assistant message instead of opening a new one
PREFILL_PARAMS = {"continue_final_message": True, "add_generation_prompt": False}


@dataclass
class RolloutSettings:
    """What the rollouts need from ``LLMConfig`` (a plain, picklable copy)."""

    seed: int = 1234
    attempts: int = 3
    styles: list[str] = field(default_factory=lambda: list(P.STYLES))
    sampling: dict = field(default_factory=dict)  # transformation -> sampling dict
    max_input_chars: int = 6000
    min_output_chars: int = 40
    accept_truncated: bool = False
    max_score: dict = field(default_factory=dict)  # bucket -> highest acceptable rescored score
    raw_cut: int = 2000
    seed_requests: bool = True  # send a per-request sampling seed (reproducible sampling)
    prefill: bool = True  # start answers with a fixed prefix (annotate: '{"score": ', dialogue: 'User:')


def stable_int(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def style_order(doc_id: str, styles: list[str], seed: int) -> list[str]:
    """Per-document seeded style order: the first is the document's draw, the rest are its retries."""
    order = list(styles)
    random.Random(stable_int(seed, "style", doc_id)).shuffle(order)
    return order


def cut_words(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    cut = text[:limit]
    sp = cut.rfind(" ")
    return (cut[:sp] if sp > limit // 2 else cut), True


_SENT_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")


def trim_to_sentence(text: str) -> str:
    """Cut a truncated generation after its last complete sentence."""
    ends = [m.end() for m in _SENT_END.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else ""


def _is_bad_request(e: Exception) -> bool:
    return "BadRequestError" in str(e)


async def _generate(
    generate,
    messages: list[dict],
    sampling: dict,
    exchanges: list,
    step: str,
    s: RolloutSettings,
    attempt: int,
    doc_id: str,
    prefix: str = "",
) -> tuple[str | None, str | None, str]:
    """One request. Returns (usable text or None, problem or None, raw answer).

    ``prefix`` (with ``s.prefill``) is sent as the start of the assistant's answer and kept in the text.
    """
    from datatrove.pipeline.inference.types import InferenceError

    if prefix and s.prefill:
        messages = messages + [{"role": "assistant", "content": prefix}]
        sampling = {**sampling, **PREFILL_PARAMS}
    else:
        prefix = ""
    payload = {"messages": messages, **sampling}
    if s.seed_requests:
        payload["seed"] = stable_int(s.seed, step, doc_id, attempt) % (2**31)
    try:
        res = await generate(payload)
    except InferenceError as e:
        if not _is_bad_request(e):
            raise
        exchanges.append({"step": step, "attempt": attempt, "messages": messages, "error": str(e)[:1000]})
        return None, "rejected", str(e)[: s.raw_cut]
    raw = prefix + (res.text or "")
    exchanges.append(
        {
            "step": step,
            "attempt": attempt,
            "messages": messages,
            "sampling": {k: v for k, v in payload.items() if k != "messages"},
            "text": raw,
            "finish_reason": res.finish_reason,
            "usage": res.usage,
        }
    )
    # small models echo the <<< >>> delimiters that fence the source document in the prompt
    text = raw.replace("<<<", "").replace(">>>", "").strip()
    if res.finish_reason == "length":
        if not s.accept_truncated:
            return None, "truncated", raw
        text = trim_to_sentence(text)
    if len(text) < s.min_output_chars:
        return None, ("truncated" if res.finish_reason == "length" and raw.strip() else "empty"), raw
    return text, None, raw


async def _rescore(classifier, text: str, bucket: str, s: RolloutSettings) -> tuple[int | None, str | None]:
    if classifier is None:
        return None, None
    # predict is synchronous (fastText / embeddings): keep the event loop free for other requests
    score = int((await asyncio.to_thread(classifier.predict, [text]))[0])
    limit = s.max_score.get(bucket, 5)
    return score, ("unsafe_after_rescore" if score > limit else None)


def _quarantined(bucket: str, problems: list[str], raw: str, s: RolloutSettings, **extra) -> dict:
    return {
        "bucket": bucket,
        "status": "quarantined",
        "reason": problems[-1] if problems else "unknown",
        "problems": problems,
        "raw": (raw or "")[: s.raw_cut],
        **extra,
    }


def _doc_text(doc, s: RolloutSettings) -> tuple[str, bool]:
    return cut_words(doc.text or "", s.max_input_chars)


async def rephrase_rollout(doc, generate, settings: RolloutSettings, classifier=None) -> dict:
    """Scores 1-3: rewrite in a seeded style; retry another style if unusable or still unsafe."""
    s = settings
    text, cut = _doc_text(doc, s)
    order = style_order(str(doc.id), s.styles, s.seed)
    exchanges, problems, raw = [], [], ""
    for a in range(s.attempts):
        style = order[a % len(order)]
        out, problem, raw = await _generate(
            generate,
            P.rephrase_messages(text, style),
            s.sampling.get("rephrase", {}),
            exchanges,
            "rephrase",
            s,
            a,
            str(doc.id),
        )
        if out is not None:
            score, problem = await _rescore(classifier, out, "rephrased", s)
            if problem is None:
                return {
                    "outputs": [
                        {
                            "bucket": "rephrased",
                            "status": "ok",
                            "text": out,
                            "style": style,
                            "rescore": score,
                            "attempt": a,
                            "input_cut": cut,
                        }
                    ],
                    "exchanges": exchanges,
                }
            raw = out
        problems.append(problem)
    return {
        "outputs": [_quarantined("rephrased", problems, raw, s, styles_tried=order[: s.attempts])],
        "exchanges": exchanges,
    }


_TURN = re.compile(r"^\W*(the\s+)?(user|assistant|ai|human)\W*:", re.I | re.M)


def dialogue_problem(text: str) -> str | None:
    roles = {m.group(2).lower() for m in _TURN.finditer(text)}
    roles = {"user" if r == "human" else "assistant" if r == "ai" else r for r in roles}
    return None if {"user", "assistant"} <= roles else "no_dialogue_turns"


async def refusal_rollout(doc, generate, settings: RolloutSettings, classifier=None, moral: bool = True) -> dict:
    """Scores 4-5: a refusal dialogue, then (``moral``) a moral-education article from that dialogue."""
    s = settings
    text, cut = _doc_text(doc, s)
    exchanges, problems, raw, outputs = [], [], "", []
    dialogue = None
    for a in range(s.attempts):
        out, problem, raw = await _generate(
            generate,
            P.refusal_messages(text),
            s.sampling.get("refusal", {}),
            exchanges,
            "refusal",
            s,
            a,
            str(doc.id),
            prefix=P.DIALOGUE_PREFILL,
        )
        if out is not None:
            problem = dialogue_problem(out)
            if problem is None:
                score, problem = await _rescore(classifier, out, "refusal", s)
                if problem is None:
                    dialogue = out
                    outputs.append(
                        {
                            "bucket": "refusal",
                            "status": "ok",
                            "text": out,
                            "rescore": score,
                            "attempt": a,
                            "input_cut": cut,
                        }
                    )
                    break
            raw = out
        problems.append(problem)
    if dialogue is None:
        outputs.append(_quarantined("refusal", problems, raw, s))
        if moral:
            outputs.append(_quarantined("moral", ["no_dialogue"], "", s))
        return {"outputs": outputs, "exchanges": exchanges}
    if moral:
        problems, raw = [], ""
        for a in range(s.attempts):
            out, problem, raw = await _generate(
                generate, P.moral_messages(dialogue), s.sampling.get("moral", {}), exchanges, "moral", s, a, str(doc.id)
            )
            if out is not None:
                score, problem = await _rescore(classifier, out, "moral", s)
                if problem is None:
                    outputs.append({"bucket": "moral", "status": "ok", "text": out, "rescore": score, "attempt": a})
                    break
                raw = out
            problems.append(problem)
        else:
            outputs.append(_quarantined("moral", problems, raw, s))
    return {"outputs": outputs, "exchanges": exchanges}


async def aligned_rollout(doc, generate, settings: RolloutSettings, classifier=None) -> dict:
    """Aligned-behaviour document from a scenario (``doc.text`` is the topic)."""
    s = settings
    exchanges, problems, raw = [], [], ""
    for a in range(s.attempts):
        out, problem, raw = await _generate(
            generate,
            P.aligned_messages(doc.text),
            s.sampling.get("aligned", {}),
            exchanges,
            "aligned",
            s,
            a,
            str(doc.id),
        )
        if out is not None:
            score, problem = await _rescore(classifier, out, "aligned", s)
            if problem is None:
                return {
                    "outputs": [
                        {
                            "bucket": "aligned",
                            "status": "ok",
                            "text": out,
                            "rescore": score,
                            "attempt": a,
                            "topic": doc.text,
                        }
                    ],
                    "exchanges": exchanges,
                }
            raw = out
        problems.append(problem)
    return {"outputs": [_quarantined("aligned", problems, raw, s, topic=doc.text)], "exchanges": exchanges}


# ----------------------------------------------------------------------------- rubric labels
_JSON_OBJ = re.compile(r"\{[^{}]*\}", re.S)
_SCORE_KV = re.compile(r"[\"']?score[\"']?\s*[:=]\s*[\"']?(-?\d+(?:\.\d+)?)", re.I)
_REASON_KV = re.compile(r"[\"']?reason[\"']?\s*[:=]\s*[\"']([^\"']*)", re.I)


def parse_label(answer: str) -> tuple[int | None, str, str | None]:
    """Parse a rubric answer into (score, reason, problem). ``problem`` is None when usable.

    Accepts a JSON object anywhere in the answer (first one with a ``score``), or ``score: N`` text.
    Scores must be integers 0..5 (``3.0`` is accepted, ``2.5`` is not).
    """
    if not answer or not answer.strip():
        return None, "", "empty"
    candidates = []
    for m in _JSON_OBJ.finditer(answer):
        try:
            obj = json.loads(m.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            candidates.append(obj)
    if candidates:
        obj = candidates[0]
        raw_score, reason = obj.get("score"), obj.get("reason", "")
    else:
        m = _SCORE_KV.search(answer)
        if not m:
            return None, "", "invalid_json"
        raw_score = m.group(1)
        r = _REASON_KV.search(answer)
        reason = r.group(1) if r else ""
    try:
        f = float(raw_score)
    except (TypeError, ValueError):
        return None, "", "score_not_a_number"
    if not f.is_integer():
        return None, "", "score_not_an_integer"
    score = int(f)
    if not 0 <= score <= 5:
        return None, "", "score_out_of_range"
    return score, str(reason if reason is not None else "")[:500], None


async def annotate_rollout(doc, generate, settings: RolloutSettings) -> dict:
    """Rubric label 0-5 with reason; invalid answers are retried (with a correction turn), then quarantined."""
    from datatrove.pipeline.inference.types import InferenceError

    s = settings
    text, cut = _doc_text(doc, s)
    prefix = P.ANNOTATE_PREFILL if s.prefill else ""
    messages = P.annotate_messages(text, prefill=s.prefill)
    base = messages[:2]
    exchanges, problems, raw = [], [], ""
    sampling = {**s.sampling.get("annotate", {}), **(PREFILL_PARAMS if s.prefill else {})}
    for a in range(s.attempts):
        payload = {"messages": messages, **sampling}
        if s.seed_requests:
            payload["seed"] = stable_int(s.seed, "annotate", doc.id, a) % (2**31)
        try:
            res = await generate(payload)
        except InferenceError as e:
            if not _is_bad_request(e):
                raise
            exchanges.append({"step": "annotate", "attempt": a, "messages": messages, "error": str(e)[:1000]})
            problems.append("rejected")
            raw = str(e)
            break
        raw = prefix + (res.text or "")
        exchanges.append(
            {
                "step": "annotate",
                "attempt": a,
                "messages": messages,
                "text": res.text or "",
                "finish_reason": res.finish_reason,
                "usage": res.usage,
            }
        )
        score, reason, problem = parse_label(raw)
        if problem is None:
            return {
                "outputs": [
                    {
                        "bucket": "labels",
                        "status": "ok",
                        "score": score,
                        "reason": reason,
                        "attempt": a,
                        "input_cut": cut,
                    }
                ],
                "exchanges": exchanges,
            }
        problems.append(problem)
        # the correction turn changes the prompt, so even greedy decoding gives a new answer
        messages = base + [
            {"role": "assistant", "content": raw[:1000]},
            {"role": "user", "content": P.ANNOTATE_RETRY.format(problem=problem)},
        ]
        if s.prefill:
            messages.append({"role": "assistant", "content": P.ANNOTATE_PREFILL})
    return {"outputs": [_quarantined("labels", problems, raw, s)], "exchanges": exchanges}
