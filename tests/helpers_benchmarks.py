"""Loading a benchmark script (``benchmarks/<name>.py``) as a module, for tests that call its functions in-process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Execute ``benchmarks/<name>.py`` as a module named ``name`` (not ``__main__``, so it does not run).

    The scripts import their helpers (``_common``, other scripts) from their own folder, as they do when run as
    ``python benchmarks/<name>.py``; that folder is on ``sys.path`` while the module executes and is taken off again
    if it was not there before (a script that puts it there itself keeps it)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    folder = str(BENCHMARKS)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module
