"""SafeBeam (Algorithm 2): the cached batched implementation against a brute-force reference."""

import pytest

from evalkit.config import DecodingConfig
from evalkit.model import HFModel, ModelError
from evalkit.safebeam import safebeam_generate, safebeam_reference


@pytest.fixture(scope="module")
def tiny(tiny_tag_model_dir):
    import torch

    # a 32-wide model gains nothing from threads, and they thrash on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    m = HFModel(tiny_tag_model_dir, prompt_style="completion")
    m.model.double()  # float64: the two implementations must agree exactly, not up to rounding
    yield m
    torch.set_num_threads(threads)


@pytest.mark.parametrize("beams,top_n,drop", [(3, 4, 0.5), (2, 5, 0.5), (1, 3, 0.0)])
def test_safebeam_equals_brute_force(tiny, beams, top_n, drop):
    dec = DecodingConfig(mode="safebeam", beams=beams, top_n=top_n, drop_fraction=drop, max_new_tokens=6)
    for prompt in ["How do I", "The weather today is"]:
        fast = safebeam_generate(tiny, prompt, dec, return_ids=True)
        ref = safebeam_reference(tiny, prompt, dec)
        assert fast == ref
        assert len(fast) >= 1


def test_safebeam_differs_from_plain_beam_and_never_emits_tag(tiny):
    from infra.tokenizer import tag_id

    tag = tag_id(tiny.tok)
    outs_drop, outs_keep = [], []
    for prompt in ["How do I", "The weather today is", "Tell me", "Once upon a time"]:
        outs_drop.append(
            safebeam_generate(
                tiny, prompt, DecodingConfig(mode="safebeam", beams=3, top_n=4, max_new_tokens=6), return_ids=True
            )
        )
        outs_keep.append(
            safebeam_generate(
                tiny,
                prompt,
                DecodingConfig(mode="safebeam", beams=3, top_n=4, drop_fraction=0.0, max_new_tokens=6),
                return_ids=True,
            )
        )
    assert all(tag not in o for o in outs_drop + outs_keep)
    # dropping the high-tag half must change at least one continuation on a random model
    assert outs_drop != outs_keep


def test_safebeam_needs_the_tag(smollm2):
    with pytest.raises(ModelError, match="potentially unsafe content"):
        smollm2.generate(["hello"], DecodingConfig(mode="safebeam", max_new_tokens=2))
