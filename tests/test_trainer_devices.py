"""Devices: a device this torch build lacks is a one-line error naming the fix; MFU
comes from the one per-device peak table, and is not logged where there is no peak."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.config import load_config
from pipeline.plan import gpu_peak
from tests.conftest import ROOT, read_log
from tests.conftest import trainer_config as config
from trainer import bench_gpu
from trainer.__main__ import main
from trainer.devices import (
    PEAK_BF16,
    DeviceError,
    bf16_peak,
    mfu_peak,
    peak_entry,
    resolve_device,
)
from trainer.train import train

CUDA_BUILD = torch.version.cuda is not None


@pytest.mark.parametrize(("name", "entry"), [
    # names as torch.cuda.get_device_name reports them
    ("NVIDIA H100 80GB HBM3", ("H100 SXM", 989e12)),
    ("NVIDIA H100 PCIe", ("H100 PCIe", 756e12)),
    ("NVIDIA H100 NVL", ("H100 NVL", 835e12)),
    ("NVIDIA H200", ("H200", 989e12)),
    ("NVIDIA H200 NVL", ("H200 NVL", 835e12)),
    ("NVIDIA GH200 480GB", ("GH200", 989e12)),
    ("NVIDIA A100-SXM4-80GB", ("A100", 312e12)),
    ("NVIDIA A100 80GB PCIe", ("A100", 312e12)),
    ("NVIDIA A10G", ("A10G", 125e12)),
    ("NVIDIA A10", ("A10", 125e12)),
    ("NVIDIA L4", ("L4", 121e12)),
    ("NVIDIA L40S", ("L40S", 362e12)),
    ("Tesla V100-SXM2-16GB", ("V100", None)),  # no bf16 tensor cores: no MFU
    ("Tesla T4", ("T4", None)),
    ("NVIDIA GeForce RTX 4090", None),
    ("cpu", None),
])
def test_peak_table_matches_cuda_device_names(name, entry):
    assert peak_entry(name) == entry
    assert bf16_peak(name) == (entry[1] if entry else None)


def test_one_table_serves_trainer_benchmark_and_plan():
    assert len({name for name, _, _ in PEAK_BF16}) == len(PEAK_BF16)
    assert bench_gpu.bf16_peak is bf16_peak  # the benchmark keeps no table of its own
    assert not hasattr(bench_gpu, "DATASHEET_BF16")
    cfg = load_config(ROOT / "configs" / "llama-1.4t.yaml")
    assert gpu_peak(cfg) == bf16_peak("NVIDIA A100-SXM4-80GB") == 312e12


@pytest.mark.skipif(CUDA_BUILD, reason="this torch is a CUDA build")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_on_a_cpu_build_names_the_fix(name):
    with pytest.raises(DeviceError) as e:
        resolve_device(name)
    message = str(e.value)
    assert message == (f"trainer.device={name}: this torch ({torch.__version__}) is a CPU-only "
                       "build; install a CUDA build of torch on a machine with an NVIDIA GPU "
                       '(README "GPU setup"), or use trainer.device=cpu')


def test_other_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"^trainer.device='gpu' is not a device \(cpu, cuda, cuda:N or mps\)$"):
        resolve_device("gpu")
    with pytest.raises(DeviceError, match="the trainer runs on cpu, cuda or mps"):
        resolve_device("meta")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceError, match="^trainer.device=mps: .*use trainer.device=cpu$"):
            resolve_device("mps")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert resolve_device("cuda") == torch.device("cuda")
        with pytest.raises(DeviceError, match=f"has {n} CUDA device"):
            resolve_device(f"cuda:{n}")


@pytest.mark.skipif(CUDA_BUILD, reason="this torch is a CUDA build")
def test_command_line_error_is_one_line(book_shards, tmp_path, capsys):
    argv = ["--config", str(ROOT / "configs" / "demo.yaml"), "--set", f"shards.out={book_shards}",
            "--set", f"trainer.out={tmp_path}", "--set", "trainer.device=cuda"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: trainer.device=cuda: this torch")
    assert 'README "GPU setup"' in err and "Traceback" not in err
    assert not (tmp_path / "checkpoints").exists()


def test_mfu_peak_on_cpu():
    cpu = torch.device("cpu")
    assert mfu_peak(cpu, None) == (None, ("MFU not logged: a CPU has no datasheet peak here; "
                                         "set trainer.peak_flops to a number, or to measure"))
    peak, note = mfu_peak(cpu, 2e11)
    assert peak == 2e11 and note == "MFU against the given peak, 0.2 TFLOP/s per device"
    peak, note = mfu_peak(cpu, "measure")
    # a float32 1024^3 matmul on this process's threads: between 1 GFLOP/s and 10 TFLOP/s
    assert 1e9 < peak < 1e13
    assert note.startswith(f"MFU against a measured float32 matmul peak (1024^3 on cpu, "
                           f"{torch.get_num_threads()} threads): ")
    with pytest.raises(ValueError, match="'fast'"):
        mfu_peak(cpu, "fast")


def test_cpu_log_has_mfu_only_with_a_peak(book_shards, tmp_path):
    train(config(book_shards, tmp_path / "none", steps=2))
    assert [("mfu" in r) for r in read_log(tmp_path / "none")] == [False, False]
    train(config(book_shards, tmp_path / "given", steps=2, peak_flops=1e11))
    records = read_log(tmp_path / "given")
    flops_per_token = 6 * 837_120 + 12 * 4 * 128 * 64  # the demo at vocabulary 259, seq 64
    for r in records:
        assert r["mfu"] == pytest.approx(flops_per_token * r["tokens_per_s"] / 1e11, rel=1e-12)
