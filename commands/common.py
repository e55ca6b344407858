"""The rules every ``bridge-stg`` front-end follows: bad input and outputs (``docs/bad_input.md``).

Bad input (:func:`run_command`): an error of the package's own types (:mod:`bridge_stg.errors_bridge_stg`, which
name the offending file / row / field) or an ``OSError`` (which names the file) is printed as one line,
``<prog>: error: <message>``, and the command exits with code 2. ``--debug`` (or ``BRIDGE_STG_DEBUG=1``) shows the
traceback instead. Anything else is a bug and keeps its traceback.

Outputs:

* a command never writes onto one of its inputs (the file itself, or a folder that holds one), even with
  ``--overwrite``;
* it never replaces an existing file, or a non-empty folder that it did not write, without ``--overwrite``
  (:func:`check_output_file`, :func:`plan_output_folder`);
* a folder the same command wrote before, recognised by what it wrote there, is refreshed, and the command says
  what it replaces (the README's ``bridge-stg demo --out demo_out`` can be run twice);
* everything is written under a temporary name beside its target and renamed at the end
  (:func:`atomic_output_file`, :func:`staged_folder`), so an interrupted run leaves the old output or nothing,
  never half of one.

Standard library only (no torch): ``bridge-stg --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from bridge_stg.errors_bridge_stg import BridgeSTGError, OutputExistsError
from bridge_stg.processing.paths import atomic_output_file, temporary_sibling, write_text_atomic

#: environment variable that turns on ``--debug`` for every command (``bridge-stg --debug <command>`` sets it)
DEBUG_ENV = "BRIDGE_STG_DEBUG"
#: exit code of bad input
EXIT_BAD_INPUT = 2


# ------------------------------------------------------------------------------------------------ bad input
def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (whitespace runs collapsed)."""
    return " ".join(str(err).split()) or type(err).__name__


def debug_requested(argv: list[str] | None = None, strip: bool = True) -> bool:
    """Whether ``--debug`` is in ``argv`` (removed from it in place when ``strip``) or ``BRIDGE_STG_DEBUG`` is set."""
    found = False
    if argv is not None and strip:
        while "--debug" in argv:
            argv.remove("--debug")
            found = True
    return found or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_command(
    prog: str,
    body: Callable[[list[str]], int | None],
    argv: Sequence[str] | None = None,
    errors: tuple[type[BaseException], ...] = (BridgeSTGError, OSError),
    strip_debug: bool = True,
) -> int:
    """Run ``body(argv)`` and turn bad input into one line on stderr and exit code 2.

    Args:
        prog: the command's name in messages, e.g. ``"bridge-stg predict"``.
        body: parses ``argv`` and runs the command; returns the exit code (``None`` = 0).
        argv: the arguments (default ``sys.argv[1:]``); ``--debug`` is taken out of them.
        errors: the exception types that mean bad input.
        strip_debug: take ``--debug`` out of ``argv`` (``bridge-stg train`` passes ``False``: ``--debug`` is an option
            of ``TrainingArguments`` there; ``bridge-stg --debug train`` or ``BRIDGE_STG_DEBUG=1`` still work).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args, strip=strip_debug)
    try:
        return int(body(args) or 0)
    except BrokenPipeError:  # the reader went away (`... | head`): nothing to say, and nothing more to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except errors as err:
        if debug:
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------------------ outputs
def _resolved(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.fspath(path))).resolve()


def check_not_an_input(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None], option: str) -> None:
    """Raise :class:`OutputExistsError` when ``output`` is one of ``inputs`` or a folder that holds one (links resolved):
    a command never writes onto what it reads, ``--overwrite`` or not."""
    out = _resolved(output)
    for item in inputs:
        if item is None:
            continue
        src = _resolved(item)
        if out == src:
            raise OutputExistsError(f"{option} {output}: is an input of this command ({item}); choose another path")
        if out in src.parents:
            raise OutputExistsError(f"{option} {output}: holds an input of this command ({item}); choose another path")


def check_output_file(
    path: str | os.PathLike[str], overwrite: bool, option: str, inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> Path:
    """Check that ``path`` may be written as a file: not a folder, its folder exists, not an input, and absent
    unless ``overwrite``. Returns it as a ``Path``."""
    p = Path(path)
    if p.is_dir():
        raise OutputExistsError(f"{option} {path}: is a folder; give a file name")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise BridgeSTGError(f"{option} {path}: the folder {parent} does not exist")
    check_not_an_input(p, inputs, option)
    if p.exists() and not overwrite:
        raise OutputExistsError(f"{option} {path}: exists; pass --overwrite to replace it")
    return p


@dataclass
class OutputFolder:
    """What a command will do with its output folder (:func:`plan_output_folder`).

    ``action``: ``"create"`` (absent or empty), ``"refresh"`` (written by the same command before) or ``"overwrite"``
    (someone else's, ``--overwrite`` given); ``replaces``: the entries that will be replaced.
    """

    path: Path
    action: str
    replaces: list[str] = field(default_factory=list)

    def describe(self, prog: str) -> str | None:
        """The line that says what is replaced (``None`` for a new folder)."""
        if self.action == "create":
            return None
        shown = ", ".join(self.replaces[:8]) + (f" and {len(self.replaces) - 8} more" if len(self.replaces) > 8 else "")
        why = f"written by an earlier `{prog}`" if self.action == "refresh" else "--overwrite"
        return f"{prog}: {self.path}: replacing its content ({why}): {shown}"


def plan_output_folder(
    path: str | os.PathLike[str],
    overwrite: bool,
    option: str,
    prog: str,
    written_by_us: Callable[[Path], bool],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> OutputFolder:
    """Decide what happens to an output folder, or refuse (:class:`OutputExistsError`, naming an entry that is in the way).

    Args:
        path: the folder.
        overwrite: ``--overwrite`` was given: someone else's non-empty folder may be replaced.
        option: the option's name in messages (``--out``).
        prog: the command (``bridge-stg demo``), in messages.
        written_by_us: recognises a folder the same command wrote before (by its entries); such a folder is refreshed.
        inputs: the command's inputs; the folder may neither be nor hold nor lie inside one of them.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"{option} {path}: exists and is not a folder")
    check_not_an_input(p, inputs, option)
    entries = sorted(e.name for e in p.iterdir()) if p.is_dir() else []
    if not entries:
        return OutputFolder(p, "create")
    if written_by_us(p):
        return OutputFolder(p, "refresh", entries)
    if overwrite:
        return OutputFolder(p, "overwrite", entries)
    raise OutputExistsError(
        f"{option} {path}: the folder is not empty and was not written by `{prog}` (it holds {entries[0]!r}"
        + (f" and {len(entries) - 1} more" if len(entries) > 1 else "") + "); pass --overwrite to replace it, or choose another folder"
    )


def folder_holds_only(folder: Path, names: Iterable[str], required: str) -> bool:
    """Whether every entry of ``folder`` is one of ``names`` and ``required`` is among them: the test of "a folder this
    command wrote" for commands that write a fixed set of names."""
    allowed = set(names)
    entries = {e.name for e in folder.iterdir()}
    return required in entries and entries <= allowed


@contextlib.contextmanager
def staged_folder(plan: OutputFolder, prog: str) -> Iterator[Path]:
    """Say what ``plan`` replaces (a warning of ``prog``), then yield a new temporary folder beside ``plan.path`` to
    fill; on success it takes the place of ``plan.path`` (the old folder, if any, is removed after the swap); on
    failure it is removed and ``plan.path`` is left as it was."""
    from transformers.utils import logging  # here, not at the top: `bridge-stg --help` imports this module

    note = plan.describe(prog)
    if note:
        logging.get_logger(__name__).warning(note)
    dst = plan.path
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        yield tmp
        old = None
        if dst.exists():
            old = temporary_sibling(dst, "old")
            os.replace(dst, old)
        os.replace(tmp, dst)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


__all__ = [
    "DEBUG_ENV", "EXIT_BAD_INPUT", "one_line", "debug_requested", "run_command", "check_not_an_input",
    "check_output_file", "atomic_output_file", "write_text_atomic", "OutputFolder", "plan_output_folder",
    "folder_holds_only", "staged_folder",
]
