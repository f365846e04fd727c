"""What machine a benchmark ran on: every results file records this, so a figure is never read without its machine.

``describe()`` gives the CPU model and the instruction-set flags that decide PyTorch's kernels (AVX2, AVX-512,
AVX-512 BF16, AMX), the CPUs this process may use, torch's thread count, the torch/MKL/oneDNN versions and the GPU.
``label()`` turns that into one line for tables and the README. ``kind()`` is the key reference figures are filed
under: vendor family, usable CPUs and the widest of those instruction sets, so figures from different kinds of
machines are never compared.
"""
from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

__all__ = ["describe", "label", "kind", "cpu_model", "cpu_flags"]

# Flags that change which kernels PyTorch and oneDNN/MKL pick on x86 (the speed of the same code differs with them).
KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """CPU model name ("AMD EPYC 9R14 96-Core Processor", "Intel(R) Xeon(R) Processor"); platform's guess off Linux."""
    match = re.search(r"^model name\s*:\s*(.+)$", _cpuinfo(), re.M)
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def cpu_flags() -> list[str]:
    """The :data:`KEY_FLAGS` this CPU reports (Linux; empty elsewhere)."""
    match = re.search(r"^flags\s*:\s*(.+)$", _cpuinfo(), re.M)
    present = set(match.group(1).split()) if match else set()
    return [f for f in KEY_FLAGS if f in present]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _family(model: str) -> str:
    for name in ("AMD EPYC", "AMD Ryzen", "Intel(R) Xeon(R)", "Intel(R) Core(TM)", "Apple"):
        if name.lower() in model.lower():
            return name.replace("(R)", "").replace("(TM)", "")
    return model


def _isa(flags: list[str]) -> str:
    """The widest matrix/vector instructions present: what decides which CPU kernels PyTorch, MKL and oneDNN run."""
    for flag, name in (("amx_tile", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
        if flag in flags:
            return name
    return "no AVX2"


def kind(model: str | None = None, cpus: int | None = None, flags: list[str] | None = None) -> str:
    """Reference-figure key: "<family>, <n> CPUs, <widest ISA>", e.g. "AMD EPYC, 2 CPUs, AVX-512 BF16"."""
    model = cpu_model() if model is None else model
    cpus = _usable_cpus() if cpus is None else cpus
    flags = cpu_flags() if flags is None else flags
    return f"{_family(model)}, {cpus} CPUs, {_isa(flags)}"


def describe(device: str = "cpu") -> dict:
    """Everything a results file records about the machine (``device`` "cuda" adds the GPU)."""
    import torch

    info = dict(cpu_model=cpu_model(), cpu_flags=cpu_flags(), cpus_usable=_usable_cpus(), cpu_count=os.cpu_count(),
                kind=kind(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                cpu_capability=torch.backends.cpu.get_cpu_capability(), mkl=torch.backends.mkl.is_available(),
                mkldnn=torch.backends.mkldnn.is_available(), python=platform.python_version(), os=platform.platform(),
                date=time.strftime("%Y-%m-%d"))
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda)
    return info


def label(info: dict | None = None) -> str:
    """One line: "Intel(R) Xeon(R) Processor, 2 CPUs (avx2 avx512f ...), 2 threads, torch 2.13.0+cpu"."""
    info = describe() if info is None else info
    gpu = f", {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu_model']}, {info['cpus_usable']} CPUs ({' '.join(info['cpu_flags']) or 'no AVX2'}), "
            f"{info['torch_threads']} threads, torch {info['torch']}{gpu}")
