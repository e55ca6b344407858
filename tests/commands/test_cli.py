"""The bridge-stg dispatcher: help, version, unknown commands, every listed command importable."""

from __future__ import annotations

import importlib
import subprocess
import sys

from bridge_stg.commands.cli import SUBCOMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name}" in out


def test_every_listed_command_has_a_main():
    for name, (module, _) in SUBCOMMANDS.items():
        assert callable(importlib.import_module(module).main), name


def test_version_and_unknown_command():
    res = subprocess.run(["bridge-stg", "version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("bridge-stg 0.1.0")
    res = subprocess.run([sys.executable, "-m", "bridge_stg.commands.cli", "frobnicate"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "unknown command 'frobnicate'" in res.stderr
