"""Entry point of the ``bridge-stg`` console script.

Every subcommand is a module of :mod:`bridge_stg.commands` exposing ``main(argv: list[str]) -> int``
that owns its own parser (``HfArgumentParser`` over dataclasses where the options map onto config
fields). This file only dispatches, so adding a subcommand never touches another one.

``bridge-stg --help`` and ``bridge-stg version`` import neither torch nor transformers (the package defers its model
classes in the console script, see :mod:`bridge_stg`); every other command gets the classes registered first.

Bad input is one line on stderr and exit code 2 (:func:`bridge_stg.commands.common.run_command`, also applied here to
whatever a subcommand lets through); ``bridge-stg --debug <command> ...`` (or ``--debug`` anywhere after a command but
``train``, where ``--debug`` is a ``TrainingArguments`` option) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module, one-line description). Order is the order of ``bridge-stg --help``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("bridge_stg.commands.demo", "ground fresh synthetic clips with the shipped tiny checkpoint and score them"),
    "ground": ("bridge_stg.commands.ground", "ground a sentence in a video; print the tube, write an annotated video"),
    "app": ("bridge_stg.commands.app", "ground videos in the browser (Gradio, the [app] extra); --export writes a Hugging Face Space"),
    "train": ("bridge_stg.commands.train", "fine-tune Bridge-STG with transformers.Trainer from a recipe (YAML/JSON) plus overrides"),
    "predict": ("bridge_stg.commands.predict", "ground every query of a dataset split with a checkpoint; write the rows evaluate scores"),
    "evaluate": ("bridge_stg.commands.evaluate", "score predictions against references with the exact STVG metrics"),
    "convert": ("bridge_stg.commands.convert", "convert VidSTG / TubeDETR / HC-STVG / TVG / REC annotations to a datasets folder"),
    "synth": ("bridge_stg.commands.synth", "write the synthetic STVG benchmark (mp4 clips + exact boxes)"),
    "version": ("bridge_stg.commands.version", "print the versions of bridge-stg and its main dependencies"),
}


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = [
        "usage: bridge-stg <command> [options]",
        "",
        "Bridge-STG: spatio-temporal video grounding (when + where) with a video MLLM and a spatial decoder.",
        "",
        "commands:",
    ]
    for name, (_, desc) in SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {desc}")
    lines += ["", "Run `bridge-stg <command> --help` for the options of one command. Bad input exits with code 2 and one",
              "line on stderr; `bridge-stg --debug <command> ...` shows the traceback instead."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``bridge-stg <command> ...``; returns the exit code."""
    from bridge_stg.commands.common import DEBUG_ENV, run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] == "--debug":  # `bridge-stg --debug <command>`: for the command too (train included)
        argv.pop(0)
        debug = True
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        argv[0] = "version"
    name, rest = argv[0], argv[1:]
    if name != "train" and "--debug" in rest:  # train: `--debug` belongs to TrainingArguments
        rest = [a for a in rest if a != "--debug"]
        debug = True
    if name not in SUBCOMMANDS:
        print(f"bridge-stg: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    if name != "version":
        import bridge_stg

        bridge_stg._import_and_register()  # deferred in the console script (see the module docstring)
    module = importlib.import_module(SUBCOMMANDS[name][0])
    previous = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"
    try:
        return run_command(f"bridge-stg {name}", module.main, rest, strip_debug=False)
    finally:
        if debug:
            if previous is None:
                os.environ.pop(DEBUG_ENV, None)
            else:
                os.environ[DEBUG_ENV] = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
