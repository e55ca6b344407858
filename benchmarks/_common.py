"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``: this folder is on sys.path)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model and core count (the machine is shared: see the load averages)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cpus, no GPU, {platform.system()} {platform.release()}"
