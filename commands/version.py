"""``bridge-stg version``: the package version and the versions of the stack it runs on."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bridge-stg version", description="Print versions.")
    parser.parse_args(argv)
    from bridge_stg import __version__

    print(f"bridge-stg {__version__}")
    for dist in ("torch", "transformers", "datasets", "evaluate", "peft", "accelerate", "av", "safetensors"):
        try:
            print(f"  {dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            print(f"  {dist} (not installed)")
    print(f"  python {platform.python_version()}")
    return 0
