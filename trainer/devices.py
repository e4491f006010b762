"""Devices: which one a run may use, and the peak FLOP/s its MFU is measured against.

`PEAK_BF16` is the one table of dense bf16 tensor-core peaks (datasheet, no
sparsity) that the trainer, `trainer.bench_gpu` and `pipeline plan` read; a
device is found in it by the name CUDA reports (`torch.cuda.get_device_name`).
A device not in the table (any CPU, an unlisted GPU) has no datasheet peak: its
MFU is not logged, unless a peak is given (`trainer.peak_flops`, a number) or
measured (`trainer.peak_flops: measure`, `measure_matmul_peak`).

`resolve_device` turns `trainer.device` into a `torch.device` this torch build
can use, or a one-line `DeviceError` that names the fix.

Importing this module does not import torch (pipeline/core/config.py reads the table).
"""

from __future__ import annotations

import re
import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Dense bf16 tensor-core peak FLOP/s per device, from NVIDIA's datasheets (which print
# twice these, "with sparsity"). First match wins, so a variant precedes its family.
# None: a known device without bf16 tensor cores (Volta, Turing), whose peak for the
# trainer's bf16 autocast is not a datasheet number: no MFU.
PEAK_BF16: tuple[tuple[str, str, float | None], ...] = (
    # (name, pattern matched in the CUDA device name, FLOP/s)
    ("H200 NVL", r"\bH200 NVL\b", 835e12),
    ("H200", r"\bH200\b", 989e12),  # SXM: as the H100 SXM, more memory
    ("GH200", r"\bGH200\b", 989e12),
    ("H100 NVL", r"\bH100 NVL\b", 835e12),
    ("H100 PCIe", r"\bH100 PCIe\b", 756e12),
    ("H100 SXM", r"\bH100\b", 989e12),  # "NVIDIA H100 80GB HBM3"
    ("A100", r"\bA100\b", 312e12),  # SXM and PCIe, 40 and 80 GB alike
    ("A10G", r"\bA10G\b", 125e12),  # AWS's A10 (the A10 datasheet)
    ("A10", r"\bA10\b", 125e12),
    ("L40S", r"\bL40S\b", 362e12),
    ("L4", r"\bL4\b", 121e12),
    ("V100", r"\bV100", None),
    ("T4", r"\bT4\b", None),
)

# What to do when the build lacks a device: the README section that says how.
GPU_SETUP = 'README "GPU setup"'


class DeviceError(ValueError):
    """A requested device this torch build or machine cannot use (the message names the fix)."""


def peak_entry(device_name: str) -> tuple[str, float | None] | None:
    """(table name, dense bf16 peak FLOP/s or None) of the first `PEAK_BF16` entry
    matching `device_name` (case-insensitive), or None for a device not in the table."""
    for name, pattern, flops in PEAK_BF16:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return name, flops
    return None


def bf16_peak(device_name: str) -> float | None:
    """The dense bf16 datasheet peak FLOP/s for a device name, or None (not in the table,
    or without bf16 tensor cores)."""
    entry = peak_entry(device_name)
    return entry[1] if entry else None


def resolve_device(name: str) -> torch.device:
    """`trainer.device` ("cpu", "cuda", "cuda:N", "mps") as a device this process can use.

    Raises:
        DeviceError: not a device name; CUDA asked of a CPU-only build of torch, or
            of a machine where the CUDA build sees no GPU; an index past the GPUs
            there are; MPS where this build or machine has none.
    """
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"trainer.device={name!r} is not a device (cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise DeviceError(
                f"trainer.device={name}: this torch ({torch.__version__}) is a CPU-only build; "
                f"install a CUDA build of torch on a machine with an NVIDIA GPU ({GPU_SETUP}), "
                "or use trainer.device=cpu")
        count = torch.cuda.device_count()
        if count == 0:
            raise DeviceError(
                f"trainer.device={name}: torch {torch.__version__} (CUDA {torch.version.cuda}) "
                "sees no GPU: check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES "
                f"({GPU_SETUP}), or use trainer.device=cpu")
        if device.index is not None and device.index >= count:
            raise DeviceError(
                f"trainer.device={name}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_built():
            raise DeviceError(f"trainer.device={name}: this torch ({torch.__version__}) is built "
                              "without MPS (Apple GPUs, macOS only); use trainer.device=cpu")
        if not torch.backends.mps.is_available():
            raise DeviceError(f"trainer.device={name}: MPS is built in but this machine has no "
                              "usable Apple GPU (macOS 12.3 or later); use trainer.device=cpu")
    elif device.type != "cpu":
        raise DeviceError(f"trainer.device={name}: the trainer runs on cpu, cuda or mps")
    return device


def device_name(device: torch.device) -> str:
    """What the device calls itself: CUDA's name for a GPU ("NVIDIA H100 80GB HBM3"),
    else its type ("cpu", "mps")."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int,
                        repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul of random normal `dtype` data on `device`: the
    median over `repeats` timed products after 2 warm-ups; 2 n^3 FLOPs each. What this
    device sustains now, with its current threads, clocks and temperature."""
    import torch

    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
    del a, b
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * n**3 / statistics.median(times)


# Sizes of the measured peak: large enough to pass launch overhead and caches, small
# enough to take a second or two (a CPU thread does ~50-100 GFLOP/s in float32).
MEASURE_N = {"cuda": 8192, "cpu": 1024, "mps": 4096}


def mfu_peak(device: torch.device, given: float | str | None) -> tuple[float | None, str]:
    """The per-device peak FLOP/s to log MFU against, and a line saying where it came from.

    Args:
        given: a number (trainer.peak_flops or --peak-flops), "measure"
            (`measure_matmul_peak` in the dtype the trainer computes in: bf16 on
            CUDA, float32 elsewhere), or None: the `PEAK_BF16` entry of a CUDA
            device, else no peak (MFU not logged).
    """
    import torch

    if isinstance(given, (int, float)):
        return float(given), f"MFU against the given peak, {given / 1e12:,.3g} TFLOP/s per device"
    if given == "measure":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        n = MEASURE_N.get(device.type, 1024)
        peak = measure_matmul_peak(device, dtype, n)
        what = str(dtype).removeprefix("torch.")
        threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
        return peak, (f"MFU against a measured {what} matmul peak ({n}^3 on {device_name(device)}"
                      f"{threads}): {peak / 1e12:,.3g} TFLOP/s")
    if given is not None:
        raise ValueError(f"peak FLOP/s {given!r}: a number, 'measure' or none")
    name = device_name(device)
    entry = peak_entry(name) if device.type == "cuda" else None
    if entry and entry[1]:
        return entry[1], f"MFU against the {entry[0]} bf16 dense peak, {entry[1] / 1e12:,.0f} TFLOP/s"
    why = ("a CPU has no datasheet peak here" if device.type == "cpu"
           else f"{name} has no bf16 tensor-core peak" if entry
           else f"{name} is not in the peak table (trainer/devices.py)")
    return None, f"MFU not logged: {why}; set trainer.peak_flops to a number, or to measure"
