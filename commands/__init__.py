"""The ``bridge-stg`` command line. Each subcommand lives in its own module with a ``main(argv)``.

``bridge_stg.commands.demo_checkpoint_path()`` gives the folder of the shipped demo checkpoint (imported
lazily, so that ``bridge-stg --help`` does not import torch).
"""

from __future__ import annotations

from typing import Any

__all__ = ["demo_checkpoint_path"]


def __getattr__(name: str) -> Any:
    if name == "demo_checkpoint_path":
        from ._assets import demo_checkpoint_path

        return demo_checkpoint_path
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
