"""The README's Python example runs as written."""

from __future__ import annotations

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    printed = capsys.readouterr().out
    start, end = (int(v) for v in re.fullmatch(r"\[(\d+), (\d+)\]\s*", printed).groups())  # the half-open span
    assert 0 <= start < end <= 40


def test_readme_has_exactly_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    bash_blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert [b.strip() for b in bash_blocks][:2] == [
        'pip install torch==2.13.0 && pip install -e . && bridge-stg demo --out demo_out',
        'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q',
    ]
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m pytest -q" in ci and 'pip install "torch==2.13.0"' in ci
