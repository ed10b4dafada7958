"""The GPU-path pieces of the model that run on CPU: the padded-vocabulary mask without a full-logits
pass, per-layer torch.compile, torchao float8 conversion (``model_checks.py`` in one subprocess), and
the pure checks of FP8 recipes and fused kernels."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infra.config import ConfigError
from infra.paths import REPO_ROOT
from tests.trainer.conftest import trainer_env
from trainer.fp8 import check_fp8
from trainer.fusions import Installed, resolve_fusions


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_checks") / "checks.json"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "trainer" / "model_checks.py"), str(out)],
        cwd=REPO_ROOT,
        env=trainer_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


def _ok(result: dict) -> dict:
    assert "error" not in result, result.get("error")
    return result


def test_padded_vocab_mask_equals_masked_fill_reference(checks):
    r = _ok(checks["padded_vocab"])
    assert r["padded_vocab"] == 384  # 300 real tokens, 84 padding rows
    assert r["loss_equal"] and r["grads_equal"]  # bit for bit against the full-logits masked_fill
    assert r["pad_logits_min"] and r["real_logits_unchanged"]
    assert r["pad_rows_grad_zero"] and r["real_rows_grad_nonzero"]
    # and the padding takes no probability mass: a cross-entropy over the real vocabulary alone agrees
    assert abs(r["loss"] - r["sliced_reference_loss"]) <= 1e-5 * abs(r["loss"])


def test_compile_is_per_layer_and_keeps_the_loss(checks):
    r = _ok(checks["compile_layers"])
    assert r["compiled"] == r["layers"] == 2 and r["each_layer_compiled"] and r["model_and_block_eager"]
    assert r["loss_diff"] < 1e-4 and r["loss_diff_second_call"] < 1e-4 and r["grad_max_diff"] < 1e-4


def test_param_gather_hooks_hoisted_to_compiled_layers(checks):
    r = _ok(checks["hoisted_gather_hooks"])
    assert r["hooked_layers"] == 2 and all(n > 1 for n in r["hooks_before_per_layer"])  # one per submodule
    assert r["inner_hooks_after"] == 0 and r["layer_hooks_after"] == [1, 1]
    assert r["loss_diff"] < 1e-4 and r["grad_buffer_nonzero"]


def test_float8_conversion_of_the_torch_spec(checks):
    r = _ok(checks["float8"])
    if "skipped" in r:
        pytest.skip(r["skipped"])
    assert r["converted"] == r["expected"] == 8  # 4 linears x 2 layers
    assert r["all_share_weights"] and r["params_same_objects"] and r["state_dict_keys_same"]
    assert r["output_layer_untouched"]
    fwd = r["cpu_forward"]
    if not fwd["ran"]:
        pytest.skip(f"float8 matmuls need a GPU with this torch build: {fwd['why']}")
    assert fwd["weight_grad_nonzero"] and fwd["rel_diff"] < 2e-2, fwd


H100, ADA, AMPERE, B200 = (9, 0), (8, 9), (8, 0), (10, 0)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("te", "mxfp8", "e4m3", H100, "13.0", "2.11.0"), "MXFP8 needs a Blackwell GPU"),
        (("te", "mxfp8", "e4m3", B200, "13.0", "2.11.0"), None),
        (("te", "delayed", "hybrid", H100, "12.8", "2.11.0"), None),
        (("te", "delayed", "hybrid", H100, "12.8", "2.11.0", True), "delayed scaling under torch.compile"),
        (("te", "tensorwise", "hybrid", H100, "12.8", "2.1.0"), "needs Transformer-Engine >= 2.2"),
        (("te", "blockwise", "e4m3", H100, "12.8", "2.11.0"), "CUDA >= 12.9"),
        (("te", "blockwise", "e4m3", H100, "13.0", "2.11.0"), None),
        (("te", "delayed", "hybrid", AMPERE, "13.0", "2.11.0"), "compute capability 8.9 or higher"),
        (("te", "delayed", "hybrid", ADA, "12.0", "2.11.0"), "CUDA >= 12.1"),
        (("te", "delayed", "hybrid", H100, "13.0", None), "Transformer-Engine is not installed"),
        (("te", "rowwise", "e4m3", H100, "13.0", "2.11.0"), "the te spec's recipes"),
        (("torchao", "tensorwise", "hybrid", H100, "13.0", "0.17.0"), None),
        (("torchao", "tensorwise", "e4m3", H100, "13.0", "0.17.0"), "tensorwise recipe is model.fp8=hybrid"),
        (("torchao", "rowwise", "e4m3", ADA, "13.0", "0.17.0"), "rowwise scaling needs compute capability"),
        (("torchao", "delayed", "hybrid", H100, "13.0", "0.17.0"), "Transformer-Engine recipes"),
        (("torchao", "tensorwise", "hybrid", H100, "13.0", None), "torchao is not installed"),
        (("torchao", "tensorwise", "hybrid", None, None, "0.17.0"), "needs a CUDA GPU"),
    ],
)
def test_fp8_recipe_checked_against_gpu_and_library(args, fragment):
    why = check_fp8(*args)
    if fragment is None:
        assert why is None, why
    else:
        assert why is not None and fragment in why and "model.fp8_recipe=" in why, why


def test_fusions_on_where_available_and_required_ones_checked():
    none = {"gradient_accumulation": None, "rope": None, "cross_entropy": None, "swiglu": None}
    cpu = resolve_fusions(none, on_gpu=False, spec="local", have=Installed())
    assert not any(v for k, v in cpu.items() if k != "cross_entropy_fusion_impl")
    bare_gpu = resolve_fusions(none, on_gpu=True, spec="torch", have=Installed())
    assert bare_gpu["cross_entropy_loss_fusion"] and bare_gpu["bias_activation_fusion"]
    assert not bare_gpu["gradient_accumulation_fusion"] and not bare_gpu["apply_rope_fusion"]
    full = resolve_fusions(none, on_gpu=True, spec="te", have=Installed(apex_wgrad=True, te=True))
    assert full["gradient_accumulation_fusion"] and full["apply_rope_fusion"]
    off = resolve_fusions(dict(none, cross_entropy=False), on_gpu=True, spec="torch", have=Installed())
    assert not off["cross_entropy_loss_fusion"]
    with pytest.raises(ConfigError, match="model.fusions.rope' is true.*Transformer-Engine"):
        resolve_fusions(dict(none, rope=True), on_gpu=True, spec="torch", have=Installed())
    with pytest.raises(ConfigError, match="model.fusions.gradient_accumulation' is true.*apex"):
        resolve_fusions(dict(none, gradient_accumulation=True), on_gpu=True, spec="te", have=Installed(te=True))
    with pytest.raises(ConfigError, match="model.fusions.swiglu' is true.*needs CUDA"):
        resolve_fusions(dict(none, swiglu=True), on_gpu=False, spec="local", have=Installed())
