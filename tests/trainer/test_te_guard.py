"""A Transformer-Engine that is installed but broken must not break the specs that do not use it:
megatron-core imports TE at module load and catches only ImportError."""

import subprocess
import sys
import textwrap

from tests.trainer.conftest import trainer_env

PROBE = textwrap.dedent(
    """
    import sys
    guard = sys.argv[1] == "guard"
    if guard:
        from trainer.layer_specs import guard_transformer_engine, resolve_spec_name, te_available
        err = guard_transformer_engine()
        print("error:", err)
        assert not te_available()
        try:
            resolve_spec_name("te")
        except RuntimeError as e:
            print("te:", e)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    get_gpt_layer_local_spec(normalization="RMSNorm")
    if guard:
        from trainer.fusions import installed_fusion_libraries
        assert not installed_fusion_libraries().te
    print("imported megatron")
    """
)


def _probe(tmp_path, mode: str):
    pkg = tmp_path / "site" / "transformer_engine"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('raise OSError("libcudnn.so.9: cannot open shared object file")\n')
    env = trainer_env() | {"PYTHONPATH": f"{tmp_path / 'site'}:{sys.path[0]}"}
    return subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, timeout=300)


def test_a_broken_te_is_hidden_from_megatron_and_named_for_spec_te(tmp_path):
    plain = _probe(tmp_path / "a", "plain")
    # the failure the guard exists for: megatron's own import dies on the broken TE
    assert plain.returncode != 0 and "libcudnn" in plain.stderr
    guarded = _probe(tmp_path / "b", "guard")
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "imported megatron" in guarded.stdout
    # no CUDA here: TE is hidden without being imported; spec=te says why it cannot run
    assert "error: no CUDA device" in guarded.stdout
    assert "te: model.spec=te needs Transformer-Engine and CUDA (no CUDA device" in guarded.stdout
