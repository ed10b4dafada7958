"""SafeBeam (Safety Pretraining, Algorithm 2): beam search that steers away from text the model itself
would mark with the harmfulness tag.

At each step every live beam proposes its top-N next tokens (the tag itself is never proposed). For
each candidate the probability that the model emits the tag *next* (after the candidate) is looked
up; the ``drop_fraction`` of candidates with the highest tag probability are dropped; of the rest, the
k with the highest cumulative log-probability survive. A candidate that is EOS ends its hypothesis.
The search stops when the best finished hypothesis scores at least as well as every live beam (scores
only fall as text grows, so nothing live can overtake it), or at ``max_new_tokens``.

Both functions use only the model interface's incremental decoding (capability
``next_token_logprobs``: ``encode_prompt``, ``start``, ``step``, ``decode``, ``tag_token_id``,
``eos_token_id``), so any model that has it can decode with SafeBeam; ``decoding.mode=safebeam``
reaches ``safebeam_generate`` through the decoder registry of ``evalkit.model``.
``safebeam_generate`` extends all k*N candidates in one ``step`` per iteration (one cached forward
for ``HFModel``); ``safebeam_reference`` recomputes everything from scratch, one sequence at a time,
and exists to check the fast one.
"""

from __future__ import annotations

import math

from evalkit.model import EvalModel, Generation, register_decoder

NEEDS = "next_token_logprobs"


def _setup(model: EvalModel, prompt: str):
    model.require("SafeBeam", NEEDS)
    return model.tag_token_id(), model.eos_token_id, model.encode_prompt(prompt)


@register_decoder("safebeam", NEEDS)
def safebeam_generate(model: EvalModel, prompt: str, decoding, return_ids: bool = False):
    """Algorithm 2, batched: one ``model.step`` of all k*N candidates per iteration.

    Args:
        model: an ``EvalModel`` with capability ``next_token_logprobs``. prompt: the user prompt
            (formatted by the model).
        decoding: ``DecodingConfig`` (beams=k, top_n=N, drop_fraction, max_new_tokens).
        return_ids: return the generated token ids instead of a ``Generation``.
    """
    import torch

    tag, eos, prompt_ids = _setup(model, prompt)
    k, n = decoding.beams, decoding.top_n
    state, last_logp = model.start(prompt_ids)  # [beams, V]
    dev = last_logp.device
    beams: list[list[int]] = [[]]
    scores = torch.zeros(1, dtype=torch.float64, device=dev)
    rows = torch.zeros(1, dtype=torch.long, device=dev)  # each beam's row in the state
    finished: list[tuple[float, list[int]]] = []
    for _ in range(decoding.max_new_tokens):
        b = len(beams)
        masked = last_logp.clone()
        masked[:, tag] = -math.inf
        top_v, top_i = masked.topk(min(n, masked.shape[-1] - 1), dim=-1)  # sorted, best first
        per = top_i.shape[1]
        cand_beam = torch.arange(b, device=dev).repeat_interleave(per)
        cand_tok = top_i.reshape(-1)
        cand_score = scores[cand_beam] + top_v.reshape(-1)
        state, next_logp = model.step(state, rows[cand_beam], cand_tok)
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
        live_t = torch.tensor(live, device=dev)
        order = torch.sort(cand_score[live_t], descending=True, stable=True).indices[:k]
        sel = live_t[order]
        rows = sel  # the survivors are these candidate rows of the state
        beams = [beams[int(cand_beam[j])] + [int(cand_tok[j])] for j in sel.tolist()]
        scores = cand_score[sel]
        last_logp = next_logp[sel]
        if finished and max(f[0] for f in finished) >= float(scores.max()):
            break
    pool = finished + [(float(s), bm) for s, bm in zip(scores.tolist(), beams)]
    best = max(pool, key=lambda x: x[0])[1]  # max() keeps the first of equals: finished first
    if return_ids:
        return best
    return Generation(prompt, model.decode(best).strip(), len(best))


def safebeam_reference(model: EvalModel, prompt: str, decoding) -> list[int]:
    """Brute force Algorithm 2: every probability from a fresh ``start`` of the whole sequence."""
    tag, eos, prompt_ids = _setup(model, prompt)
    k, n = decoding.beams, decoding.top_n

    def logp_next(seq: list[int]):
        return model.start(prompt_ids + seq)[1][0]

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
