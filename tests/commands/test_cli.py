"""The bridge-stg dispatcher: help, version, unknown commands, every listed command importable; bad input as one line
(exit code 2) and ``--debug``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

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


def test_bad_input_is_one_line_and_debug_shows_the_traceback(tmp_path, monkeypatch):
    """Exit code 2 and one line naming the file (a real process: nothing else on stderr); `--debug` after the command,
    before it, or BRIDGE_STG_DEBUG=1 lets the error through (the traceback)."""
    from bridge_stg.errors_bridge_stg import AnnotationError

    missing = str(tmp_path / "missing.jsonl")
    argv = ["evaluate", "--references", missing, "--predictions", missing]
    res = subprocess.run([sys.executable, "-m", "bridge_stg.commands.cli", *argv], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"bridge-stg evaluate: error: {missing}: references file not found"], res.stderr
    for debug_argv in (argv + ["--debug"], ["--debug", *argv]):
        with pytest.raises(AnnotationError, match="references file not found"):
            main(debug_argv)
    monkeypatch.setenv("BRIDGE_STG_DEBUG", "1")
    with pytest.raises(AnnotationError):
        main(argv)


def test_dispatcher_turns_bad_input_of_any_command_into_one_line(monkeypatch, capsys):
    """A subcommand whose main lets a package error through (the demo's) still gives one line and exit code 2."""
    from bridge_stg.commands import demo
    from bridge_stg.errors_bridge_stg import OutputExistsError

    def refuse(*args, **kwargs):
        raise OutputExistsError("--out x: the folder is not empty")

    monkeypatch.setattr(demo, "run_demo", refuse)
    assert main(["demo", "--out", "x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["bridge-stg demo: error: --out x: the folder is not empty"]
    with pytest.raises(OutputExistsError):
        main(["--debug", "demo", "--out", "x"])
