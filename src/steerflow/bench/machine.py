"""What a benchmark ran on: CPU model, cores, load, torch version and threads, device."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name (``model name`` in /proc/cpuinfo), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), which can be fewer than the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def load_average() -> list[float]:
    """1-, 5- and 15-minute load averages (empty where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def machine_info(device: str = "cpu") -> dict:
    """A JSON-ready description of the machine and the torch build a benchmark ran on."""
    import torch

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "usable_cores": usable_cores(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "device_name": cpu_model(),
    }
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        info["device_name"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    return info


def describe(info: dict) -> str:
    """One line for people: ``AMD EPYC, 2 cores (load 0.7), torch 2.13.0, cpu, 2 threads``."""
    load = info.get("load_average") or []
    load_text = f" (load {load[0]:.2f})" if load else ""
    return (f"{info['device_name']} | {info['usable_cores']}/{info['cores']} cores{load_text} | "
            f"torch {info['torch']} | device {info['device']} | {info['torch_threads']} threads")
