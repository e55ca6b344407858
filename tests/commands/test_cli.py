"""The bridge-stg dispatcher: help, version, unknown commands, every listed command importable; help and version
without torch; bad input as one line (exit code 2) and ``--debug``."""

from __future__ import annotations

import importlib
import json
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


def _console_script() -> str:
    """The installed ``bridge-stg`` script (the file pip generated, beside this interpreter)."""
    import os
    import shutil

    path = shutil.which("bridge-stg", path=os.path.dirname(sys.executable))
    assert path is not None, "the bridge-stg console script is not installed beside this interpreter"
    return path


_MODULES_AFTER_SCRIPT = """
import json, runpy, sys
script, args = sys.argv[1], sys.argv[2:]
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
    code = 0
except SystemExit as exc:
    code = exc.code
print("MODULES" + json.dumps({"code": code, "torch": "torch" in sys.modules,
                              "transformers": "transformers" in sys.modules, "gradio": "gradio" in sys.modules}))
"""


@pytest.mark.parametrize("args", [["--help"], ["version"], []])
def test_help_and_version_do_not_import_torch(args):
    """The console script answers --help and version without importing torch, transformers or Gradio (seconds saved on
    every call); the installed script itself runs, in a fresh interpreter, and sys.modules is read at its end."""
    res = subprocess.run([sys.executable, "-c", _MODULES_AFTER_SCRIPT, _console_script(), *args], capture_output=True,
                         text=True, timeout=120)
    line = next(x for x in res.stdout.splitlines() if x.startswith("MODULES"))
    got = json.loads(line[len("MODULES"):])
    assert got == {"code": 0, "torch": False, "transformers": False, "gradio": False}, (got, res.stderr[-2000:])
    if args == ["version"]:
        assert res.stdout.startswith("bridge-stg 0.1.0") and "torch 2." in res.stdout


def test_other_commands_get_the_classes_registered():
    """In the console script the package defers its model classes; every command but help/version registers them
    first (here: `evaluate --help` registers AutoConfig's bridge_stg type before argparse exits)."""
    probe = _MODULES_AFTER_SCRIPT.replace(
        '"transformers": "transformers" in sys.modules, "gradio": "gradio" in sys.modules}',
        '"registered": __import__("bridge_stg")._REGISTERED}')
    res = subprocess.run([sys.executable, "-c", probe, _console_script(), "evaluate", "--help"], capture_output=True,
                         text=True, timeout=300)
    line = next(x for x in res.stdout.splitlines() if x.startswith("MODULES"))
    assert json.loads(line[len("MODULES"):]) == {"code": 0, "torch": True, "registered": True}, res.stderr[-2000:]


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


def test_a_closed_pipe_is_not_an_error():
    """`bridge-stg evaluate ... | head -1`: the reader going away ends the command quietly (no error line)."""
    script = ("import sys\nfrom bridge_stg.commands.common import run_command\n"
              "def body(argv):\n    print('first line', flush=True)\n    raise BrokenPipeError(32, 'Broken pipe')\n"
              "sys.exit(run_command('bridge-stg x', body, []))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout, res.stderr) == (141, "first line\n", "")
