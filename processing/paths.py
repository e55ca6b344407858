"""Safe paths: the ``video`` column of a row resolved against a video root, and outputs written under a temporary name.

A ``video`` value is always a path **relative** to a video root. Absolute paths, paths with ``..``
components that climb out of the root, and symlinks that point outside the root are rejected with
:class:`UnsafePathError` naming the row. The converters, the collator and the CLI all use
:func:`resolve_video_path`; nothing reads a video path from an annotation any other way.

Every file the package writes for a command goes through :func:`atomic_output_file`: written under a temporary
name beside its target and renamed at the end, so an interrupted write leaves the old file (or none), never half
of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

from bridge_stg.errors_bridge_stg import UnsafePathError


def check_relative_path(relpath: str, row_id: object) -> str:
    """Lexical check of a ``video`` value without a root: non-empty, relative, no ``..`` escape.

    Returns the path normalised to forward slashes. Raises :class:`UnsafePathError` naming ``row_id``.
    """
    if not isinstance(relpath, str) or not relpath.strip():
        raise UnsafePathError(f"row {row_id}: video path {relpath!r} is empty or not a string")
    if "\x00" in relpath:
        raise UnsafePathError(f"row {row_id}: video path {relpath!r} contains a NUL byte")
    posix = relpath.replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or PureWindowsPath(relpath).is_absolute() or PureWindowsPath(relpath).drive:
        raise UnsafePathError(f"row {row_id}: video path {relpath!r} is absolute; it must be relative to the video root")
    depth = 0
    for part in PurePosixPath(posix).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                raise UnsafePathError(f"row {row_id}: video path {relpath!r} leaves the video root")
        elif part not in (".", ""):
            depth += 1
    return posix


def resolve_video_path(video_root: str | os.PathLike[str], relpath: str, row_id: object) -> Path:
    """Resolve ``relpath`` under ``video_root`` and return the absolute path.

    Rejects absolute paths and anything that resolves outside the root after following symlinks
    (of the root itself and of every component below it), raising :class:`UnsafePathError` naming
    ``row_id``. The file does not need to exist.
    """
    posix = check_relative_path(relpath, row_id)
    root = Path(video_root).resolve()
    target = (root / posix).resolve()
    if target != root and root not in target.parents:
        raise UnsafePathError(f"row {row_id}: video path {relpath!r} resolves to {str(target)!r}, outside the video root {str(root)!r}")
    if target == root:
        raise UnsafePathError(f"row {row_id}: video path {relpath!r} names the video root itself, not a file")
    return target


def temporary_sibling(path: Path, kind: str) -> Path:
    """A new, unused name beside ``path`` (``.NAME.<kind>-XXXXXXXX`` + the suffix of ``path``, so writers that pick the
    format from the extension still see it)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{kind}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.remove(tmp)
    return Path(tmp)


@contextlib.contextmanager
def atomic_output_file(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed onto ``path`` (replacing it), on
    failure it is removed and ``path`` is left as it was."""
    dst = Path(path)
    tmp = temporary_sibling(dst, "tmp")
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file renamed at the end."""
    with atomic_output_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


__all__ = ["check_relative_path", "resolve_video_path", "temporary_sibling", "atomic_output_file", "write_text_atomic"]
