"""Space folders (`bridge_stg.model_cards.space`, `bridge-stg app --export`): app.py carries every file of the package,
always the same bytes for the same source, and runs where bridge-stg is not installed, answering as the pipeline
does."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from bridge_stg.commands.ground import load_grounder
from bridge_stg.model_cards.hub import save_for_hub
from bridge_stg.model_cards.space import BUNDLED_PACKAGES, bundle_bytes, bundle_files, space_readme, write_space
from helpers_grounding import synthetic_clip, tiny_model_and_processor

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundle_carries_every_package_file_and_is_deterministic():
    setup = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(setup) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    packages = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "packages"))
    dirs = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_dir"))
    assert sorted(BUNDLED_PACKAGES) == sorted(packages)
    names = set(bundle_files())
    for package in packages:
        for path in (ROOT / dirs[package]).glob("*.py"):
            assert f"{package.replace('.', '/')}/{path.name}" in names, path
    assert "bridge_stg/model_cards/template.md" in names and not any(n.startswith("bridge_stg/demo_checkpoint/") for n in names)
    data = bundle_bytes()
    assert data == bundle_bytes()
    assert sorted(zipfile.ZipFile(BytesIO(data)).namelist()) == sorted(names)


def test_space_readme_keeps_the_card_below_the_space_settings():
    card = "---\nlicense: mit\ntags:\n- custom_code\n- mine\n---\n# My model\n\ntext\n"
    text = space_readme(card, "t", is_demo=False)
    meta = text.split("---\n")[1]
    assert "sdk: gradio" in meta and "license: mit" in meta and "- mine" in meta and "custom_code" not in meta
    assert "## My model" in text and "tiny demo checkpoint" not in text
    assert "tiny demo checkpoint" in space_readme(None, "t", is_demo=True)


_SPACE_SCRIPT = """
import json, runpy, sys
# the installed (editable) bridge_stg must not be found: only the copy app.py carries
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
app, video, text = sys.argv[1:4]
ns = runpy.run_path(app, run_name="space_check")
page = ns["build_page"]()
import bridge_stg
blocks = page.build()
ans = page.answer(video, text)
print("RESULT" + json.dumps({"package": bridge_stg.__file__, "status": ans.status, "results": ans.results,
                             "model_dir": page.model_dir, "demo": page.is_demo}))
"""


@pytest.mark.slow
def test_the_space_runs_without_the_package_and_answers_as_the_pipeline(compact_tokenizer, tmp_path):
    model, processor = tiny_model_and_processor(compact_tokenizer, seed=6)
    ckpt = save_for_hub(model, processor, tmp_path / "ckpt")
    space = tmp_path / "space"
    space.mkdir()
    write_space(space, ckpt)
    clip = synthetic_clip(tmp_path / "clip.mp4", seed=9)
    queries = f"{clip.query}\nthe green square"
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp"), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    (tmp_path / "tmp").mkdir()
    res = subprocess.run([sys.executable, "-c", _SPACE_SCRIPT, str(space / "app.py"), str(tmp_path / "clip.mp4"), queries],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(next(x for x in res.stdout.splitlines() if x.startswith("RESULT"))[len("RESULT"):])
    assert got["package"].startswith(str(tmp_path / "tmp")), got["package"]  # the bundled copy, unpacked
    assert re.match(r"grounded 2 queries", got["status"]) and got["model_dir"] == str(space) and got["demo"] is False
    assert got["results"] == json.loads(json.dumps(load_grounder(ckpt)(str(tmp_path / "clip.mp4"),
                                                                      text=[clip.query, "the green square"])))
