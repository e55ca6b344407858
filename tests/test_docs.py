"""The reasoning lives in the repository: every ``§`` reference resolves to a heading of ``docs/``, and nothing
points outside the repository (to the development workspace or to an absolute path)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".txt", ".json")
_TOKEN = re.compile(r"(?:docs/)?([A-Za-z_][\w-]*)\.md|§\s?(\d+(?:\.\d+)*)")
_HEADING = re.compile(r"#+\s+(\d+(?:\.\d+)*)\.?\s")


def _project_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / f for f in out if f.endswith(TEXT_SUFFIXES) and (ROOT / f).is_file()]


def _headings(doc: str) -> set[str] | None:
    path = ROOT / "docs" / doc
    if not path.is_file():
        return None
    return {m.group(1) for m in map(_HEADING.match, path.read_text(encoding="utf-8").splitlines()) if m}


def test_every_section_reference_resolves_in_docs():
    """``docs/method.md §3.2`` (or ``method.md §3.2`` inside docs/) names a numbered heading of that page; a bare
    ``§`` refers to the last page named on its line (inside docs/, to the page itself)."""
    cache: dict[str, set[str] | None] = {}
    bad = []
    for path in _project_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("tests/test_docs.py"):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if "§" not in line:
                continue
            page = path.name if rel.startswith("docs/") and rel.endswith(".md") else None
            for m in _TOKEN.finditer(line):
                if m.group(1):
                    page = m.group(1) + ".md"
                    continue
                if page is None:
                    bad.append(f"{rel}:{n}: §{m.group(2)} names no page")
                    continue
                if page not in cache:
                    cache[page] = _headings(page)
                if cache[page] is None:
                    bad.append(f"{rel}:{n}: docs/{page} does not exist")
                elif m.group(2) not in cache[page]:
                    bad.append(f"{rel}:{n}: docs/{page} has no heading §{m.group(2)}")
    assert not bad, "\n".join(bad)


def test_nothing_points_outside_the_repository():
    """No file refers to the development workspace's notes (``../shared``) or to an absolute path; the data tests
    find the VidSTG sentence files through ``BRIDGE_STG_VIDSTG_DIR`` (``tests/conftest.py``)."""
    allowed = {"tests/conftest.py"}  # the documented fallback location of the VidSTG sentence files
    outside = re.compile(r"\.\./shared|shared/(?:docs|data)|/work/|/root/|/home/\w")
    bad = []
    for path in _project_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed or rel == "tests/test_docs.py" or rel.startswith(".ci/"):
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if outside.search(line):
                bad.append(f"{rel}:{n}: {line.strip()[:120]}")
    assert not bad, "\n".join(bad)


def test_every_test_named_in_bad_input_exists():
    """docs/bad_input.md names the test of each class of bad input: ``dir/test_file.py::test_name``, then bare
    ``test_name`` entries of the same file; each must be a test function of that file."""
    import ast

    text = (ROOT / "docs" / "bad_input.md").read_text(encoding="utf-8")
    named, missing = 0, []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        current = None
        for token in re.findall(r"`([^`]+)`", line.rsplit("|", 2)[-2]):
            if "::" in token:
                current, token = token.split("::")
            if current is None or not token.startswith("test_"):
                continue
            path = ROOT / "tests" / current
            tests = {n.name for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(n, ast.FunctionDef)} if path.is_file() else set()
            named += 1
            if token not in tests:
                missing.append(f"{current}::{token}")
    assert named > 40 and not missing, missing
