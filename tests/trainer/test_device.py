"""``train.device``: a GPU that is expected but unusable is an error naming why, never a CPU run."""

from __future__ import annotations

import re

import pytest

from tests.trainer.conftest import run_trainer, tiny_args
from trainer.device import CudaProbe, DeviceError, probe_cuda, resolve_device

NO_DRIVER = CudaProbe(False, "the NVIDIA driver on your system is too old (found version 12020)", gpu_present=True)
NO_GPU = CudaProbe(False, "torch.cuda.is_available() is False", gpu_present=False)
H200 = CudaProbe(True, "", gpu_present=True, name="NVIDIA H200")


def test_resolve_device_choices():
    assert resolve_device("cpu", H200)[0] == "cpu"  # the CPU on purpose, even with a working GPU
    assert resolve_device("cuda", H200) == ("cuda", "train.device=cuda: training on CUDA (NVIDIA H200)")
    device, line = resolve_device("auto", H200)
    assert device == "cuda" and "NVIDIA H200" in line
    device, line = resolve_device("auto", NO_GPU)
    assert device == "cpu" and "no CUDA device" in line and NO_GPU.reason in line
    with pytest.raises(DeviceError, match="'train.device'.*expected one of"):
        resolve_device("gpu", H200)


@pytest.mark.parametrize("choice", ["cuda", "auto"])
def test_unusable_gpu_is_an_error_not_a_cpu_run(choice):
    with pytest.raises(DeviceError) as e:
        resolve_device(choice, NO_DRIVER)
    msg = str(e.value)
    assert "CUDA is not usable" in msg and NO_DRIVER.reason in msg and "train.device=cpu" in msg
    if choice == "cuda":  # without a GPU in sight only an explicit cuda is an error
        with pytest.raises(DeviceError, match=re.escape(NO_GPU.reason)):
            resolve_device(choice, NO_GPU)


def test_train_device_cuda_without_cuda_stops_before_work(tiny_corpus, tmp_path):
    probe = probe_cuda()
    if probe.usable:
        pytest.skip("CUDA works on this machine")
    run_dir = tmp_path / "run"
    proc = run_trainer(*tiny_args(run_dir, tiny_corpus, "train.device=cuda", steps=2), check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "key 'train.device' is cuda but CUDA is not usable" in proc.stderr
    assert probe.reason in proc.stderr
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "checkpoints").exists()
