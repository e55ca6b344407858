"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``: this folder is on sys.path)."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
import traceback
from typing import Any, Callable


def machine() -> str:
    """CPU model and core count (the machine is shared: see the load averages)."""
    from bridge_stg.training.demo import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cpus, no GPU, {platform.system()} {platform.release()}"


def guarded_run(run: Callable[..., dict[str, Any]], names: tuple[str, str], *call: Any) -> dict[str, Any]:
    """``run(*call)``, or, when it raises, a result recording the error, so that one failed run does not lose the
    others of a sweep; ``names`` are the result's keys for ``call[0]`` and ``call[1]`` (the run's variant and seed)."""
    try:
        return run(*call)
    except Exception as exc:
        return {names[0]: call[0], names[1]: call[1], "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()}


def family_cell(result: dict[str, Any]) -> str:
    """One query family's table cell: m_vIoU, and the twin identity accuracy where the family has one."""
    cell = f"{result['m_vIoU']:.3f}"
    if result.get("identity_accuracy") is not None:
        cell += f" (id {result['identity_accuracy']:.2f})"
    return cell


def run_record(benchmark: str, quick: bool, started: float, load_start: list[float],
               argv: list[str] | None = None) -> dict[str, Any]:
    """The bookkeeping keys of a benchmark's JSON last line: its name, ``--quick``, the machine, the load averages at
    start and end, the UTC date, the command line and the seconds since ``started`` (a ``time.perf_counter()``).

    ``argv``: the arguments of a ``main(argv)`` called in-process (the command is then written as the script's own
    command line with them); ``None``: this process's command line."""
    command = ([os.path.basename(sys.executable), *sys.argv] if argv is None
               else ["python", f"benchmarks/{benchmark}.py", *argv])
    return {
        "benchmark": benchmark, "quick": quick, "machine": machine(),
        "load_avg_start": load_start, "load_avg_end": list(os.getloadavg()),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command),
        "seconds": round(time.perf_counter() - started, 1),
    }
