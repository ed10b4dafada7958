"""SafeBeam (Safety Pretraining, Algorithm 2): beam search that steers away from text the model itself
would mark with the harmfulness tag.

At each step every live beam proposes its top-N next tokens (the tag itself is never proposed). For
each candidate the probability that the model emits the tag *next* (after the candidate) is looked
up; the ``drop_fraction`` of candidates with the highest tag probability are dropped; of the rest, the
k with the highest cumulative log-probability survive. A candidate that is EOS ends its hypothesis.
The search stops when the best finished hypothesis scores at least as well as every live beam (scores
only fall as text grows, so nothing live can overtake it), or at ``max_new_tokens``.

``safebeam_generate`` batches the k*N candidate look-ups into one cached forward per step;
``safebeam_reference`` recomputes everything from scratch, one sequence at a time, and exists to
check the fast one.
"""

from __future__ import annotations

import math

from evalkit.model import Generation, ModelError


def _cached_forward(lm, ids, cache=None):
    """One forward with a KV cache; transformers renamed ``past_key_values`` to ``cache`` during 5.x."""
    import inspect

    kw = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    out = lm(input_ids=ids, use_cache=True, **({kw: cache} if cache is not None else {}))
    new = getattr(out, "cache", None)
    return out, (new if new is not None else out.past_key_values)


def _tag(model) -> int:
    from infra.tokenizer import TokenizerError, tag_id

    try:
        tid = tag_id(model.tok)
    except TokenizerError as e:
        raise ModelError(f"SafeBeam on {model.name}: {e}") from None
    if tid >= model.model.get_input_embeddings().weight.shape[0]:
        raise ModelError(f"SafeBeam on {model.name}: tag id {tid} is outside the model's embedding matrix")
    return tid


def _prompt_ids(model, prompt: str) -> list[int]:
    return model.tok(model.format(prompt), add_special_tokens=model.prompt_style != "chat")["input_ids"]


def safebeam_generate(model, prompt: str, decoding, return_ids: bool = False):
    """Algorithm 2 with a KV cache: one forward of all k*N candidates per step.

    Args:
        model: an ``evalkit.model.HFModel``. prompt: the user prompt (formatted by the model).
        decoding: ``DecodingConfig`` (beams=k, top_n=N, drop_fraction, max_new_tokens).
        return_ids: return the generated token ids instead of a ``Generation``.
    """
    import torch

    tag = _tag(model)
    eos = model.tok.eos_token_id
    k, n = decoding.beams, decoding.top_n
    ids = torch.tensor([_prompt_ids(model, prompt)], device=model.device)
    with torch.no_grad():
        out, cache = _cached_forward(model.model, ids)
    last_logp = torch.log_softmax(out.logits[:, -1].double(), dim=-1)  # [beams, V]
    beams: list[list[int]] = [[]]
    scores = torch.zeros(1, dtype=torch.float64, device=model.device)
    finished: list[tuple[float, list[int]]] = []
    for _ in range(decoding.max_new_tokens):
        b = len(beams)
        masked = last_logp.clone()
        masked[:, tag] = -math.inf
        top_v, top_i = masked.topk(min(n, masked.shape[-1] - 1), dim=-1)  # sorted, best first
        per = top_i.shape[1]
        cand_beam = torch.arange(b, device=model.device).repeat_interleave(per)
        cand_tok = top_i.reshape(-1)
        cand_score = scores[cand_beam] + top_v.reshape(-1)
        cache.reorder_cache(cand_beam)
        with torch.no_grad():
            out, cache = _cached_forward(model.model, cand_tok[:, None], cache)
        next_logp = torch.log_softmax(out.logits[:, -1].double(), dim=-1)
        tag_p = next_logp[:, tag].exp()
        c = cand_tok.shape[0]
        n_drop = int(math.floor(decoding.drop_fraction * c))
        by_tag = torch.sort(tag_p, descending=True, stable=True).indices
        live = []
        for j in sorted(by_tag[n_drop:].tolist()):  # back to candidate order, as the reference keeps
            tok = int(cand_tok[j])
            if tok == eos:
                finished.append((float(cand_score[j]), beams[int(cand_beam[j])] + [tok]))
            else:
                live.append(j)
        if not live:
            break
        live_t = torch.tensor(live, device=model.device)
        order = torch.sort(cand_score[live_t], descending=True, stable=True).indices[:k]
        sel = live_t[order]
        cache.reorder_cache(sel)
        beams = [beams[int(cand_beam[j])] + [int(cand_tok[j])] for j in sel.tolist()]
        scores = cand_score[sel]
        last_logp = next_logp[sel]
        if finished and max(f[0] for f in finished) >= float(scores.max()):
            break
    pool = finished + [(float(s), bm) for s, bm in zip(scores.tolist(), beams)]
    best = max(pool, key=lambda x: x[0])[1]  # max() keeps the first of equals: finished first
    if return_ids:
        return best
    return Generation(prompt, model.tok.decode(best, skip_special_tokens=True).strip(), len(best))


def safebeam_reference(model, prompt: str, decoding) -> list[int]:
    """Brute force Algorithm 2: every probability from a fresh full forward of one sequence."""
    import torch

    tag = _tag(model)
    eos = model.tok.eos_token_id
    k, n = decoding.beams, decoding.top_n
    prompt_ids = _prompt_ids(model, prompt)

    def logp_next(seq: list[int]):
        with torch.no_grad():
            logits = model.model(input_ids=torch.tensor([prompt_ids + seq], device=model.device)).logits
        return torch.log_softmax(logits[0, -1].double(), dim=-1)

    beams = [([], 0.0)]
    finished = []
    for _ in range(decoding.max_new_tokens):
        cands = []  # (beam tokens + token, score, tag prob), in beam order then proposal rank
        for seq, score in beams:
            lp = logp_next(seq)
            vals = lp.tolist()
            ranked = sorted((t for t in range(len(vals)) if t != tag), key=lambda t: -vals[t])[:n]
            for t in ranked:
                new = seq + [t]
                cands.append((new, score + float(lp[t]), float(logp_next(new)[tag].exp())))
        n_drop = int(math.floor(decoding.drop_fraction * len(cands)))
        dropped = set(sorted(range(len(cands)), key=lambda i: -cands[i][2])[:n_drop])
        kept = [cands[i] for i in range(len(cands)) if i not in dropped]
        finished += [(c[1], c[0]) for c in kept if c[0][-1] == eos]
        live = sorted([c for c in kept if c[0][-1] != eos], key=lambda c: -c[1])[:k]
        if not live:
            beams = []
            break
        beams = [(c[0], c[1]) for c in live]
        if finished and max(f[0] for f in finished) >= max(b[1] for b in beams):
            break
    pool = finished + [(s, seq) for seq, s in beams]
    return max(pool, key=lambda x: x[0])[1]
