"""Safe resolution of the ``video`` column of a row against a video root.

A ``video`` value is always a path **relative** to a video root. Absolute paths, paths with ``..``
components that climb out of the root, and symlinks that point outside the root are rejected with
:class:`UnsafePathError` naming the row. The converters, the collator and the CLI all use
:func:`resolve_video_path`; nothing reads a video path from an annotation any other way.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

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


__all__ = ["check_relative_path", "resolve_video_path"]
