"""Directions in the residual stream and what is done with them: steering and abliteration.

Layer convention: ``layer`` indexes decoder blocks (0-based); its activation is the block's output,
i.e. ``hidden_states[layer + 1]`` of transformers, and steering hooks that same output.
"""

from __future__ import annotations

from dataclasses import dataclass

from infra.log import get_logger

log = get_logger(__name__)


def default_layer(num_layers: int) -> int:
    """About 70% of depth (layer 21 of 30 for SmolLM2-135M), where refusal directions steer well."""
    return max(0, min(num_layers - 1, round(0.7 * num_layers)))


def resolve_layer(model, layer: int) -> int:
    n = model.num_layers
    if layer < 0:
        return default_layer(n)
    if layer >= n:
        raise ValueError(f"direction.layer={layer} but the model has {n} layers")
    return layer


def activations(model, prompts: list[str], batch_size: int = 8):
    """Last-token residual activations of the formatted prompts, every layer: [n, layers+1, d]."""
    return model.hidden_states([model.format(p) for p in prompts], batch_size=batch_size)


def mean_difference(model, harmful: list[str], harmless: list[str], layer: int):
    """mean(harmful) - mean(harmless) at block ``layer``'s output (not normalised)."""
    h = activations(model, harmful)[:, layer + 1]
    s = activations(model, harmless)[:, layer + 1]
    return h.mean(0) - s.mean(0)


def tag_difference(model, prompts: list[str], layer: int):
    """Direction the harmfulness tag writes: mean activation of (prompt + tag) minus (prompt)."""
    from infra.corpus import TAG_TOKEN

    model.require("direction.source=tag", "hidden_states").tag_token_id()  # clear error without the tag
    with_tag = model.hidden_states([model.format(p) + TAG_TOKEN for p in prompts])[:, layer + 1]
    without = model.hidden_states([model.format(p) for p in prompts])[:, layer + 1]
    return with_tag.mean(0) - without.mean(0)


@dataclass
class AbliterationReport:
    layer: int
    max_proj_before: float
    max_proj_after: float
    matrices: int


def max_projection(model, r) -> float:
    """max |r^T W| over every edited matrix (rows of W live in the residual stream)."""
    import torch

    r = r.to(dtype=torch.float64)
    return max(float((r @ w.detach().double().cpu()).abs().max()) for _, _, w in model.output_projections())


def abliterate(model, r, layer: int) -> AbliterationReport:
    """Orthogonalise every attention-output and MLP-down projection except layer 0's: W <- W - r r^T W.

    Args:
        model: ``HFModel`` edited in place. r: direction (normalised here). layer: where r came from
        (recorded only).
    """
    import torch

    r = (r / r.norm()).double()
    before = max_projection(model, r)
    with torch.no_grad():
        for _, _, w in model.output_projections():
            rr = r.to(w.device)
            wd = w.double()
            w.copy_((wd - torch.outer(rr, rr @ wd)).to(w.dtype))
    after = max_projection(model, r)
    log.info("abliterated %d matrices: max |r^T W| %.3g -> %.3g", len(model.output_projections()), before, after)
    return AbliterationReport(layer, before, after, len(model.output_projections()))


def along(acts, r):
    """Signed projection h . r̂ of activations ``[n, layers+1, d]`` on the unit direction: ``[n, layers+1]``."""
    import torch

    r = (r / r.norm()).float().to(acts.device)
    return torch.einsum("nld,d->nl", acts.float(), r)


def residual_projection(model, prompts: list[str], r) -> list[float]:
    """Mean |h . r| of the last-token residual stream at every layer (after the edit it should be ~0
    from layer 1 on, apart from what the embedding itself carries)."""
    return [float(x) for x in along(activations(model, prompts), r).abs().mean(0)]
