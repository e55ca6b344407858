"""`bridge-stg app`: one line and exit code 2 without the [app] extra (before the model is loaded) and for a bad
checkpoint or port; `--export DIR` writes a Space folder (the checkpoint made self-contained, app.py, requirements.txt,
the Space's README.md) under the output rules: never over a non-empty folder without --overwrite, never onto, into or
around the checkpoint."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import yaml

from bridge_stg.commands import cli
from bridge_stg.evaluation.app import GRADIO_VERSION
from bridge_stg.model_cards.hub import REMOTE_CODE_FILES, save_for_hub
from bridge_stg.model_cards.space import APP_MARKER
from bridge_stg.training.demo import demo_checkpoint_path
from helpers_grounding import tiny_model_and_processor


@pytest.fixture(scope="module")
def checkpoint(compact_tokenizer, tmp_path_factory):
    model, processor = tiny_model_and_processor(compact_tokenizer, seed=4)
    return save_for_hub(model, processor, tmp_path_factory.mktemp("app_cli") / "ckpt")


def _one_error_line(capsys) -> str:
    """The one error line on stderr (transformers' progress bar while the weights load aside)."""
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and err[0].startswith("bridge-stg app: error: ")
    return err[0]


def test_without_the_app_extra_is_one_line_naming_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert cli.main(["app", "--model", str(tmp_path / "not_loaded")]) == 2
    assert 'pip install "bridge-stg[app]"' in _one_error_line(capsys)


@pytest.mark.parametrize("case", ["no_folder", "not_a_checkpoint", "bad_port", "port_in_use"])
def test_bad_model_or_port_is_one_line(case, checkpoint, tmp_path, capsys):
    pytest.importorskip("gradio", reason='the [app] extra is not installed (pip install "bridge-stg[app]")')
    argv, expect = ["app", "--model", str(tmp_path / "nope")], "no such checkpoint folder"
    if case == "not_a_checkpoint":
        argv, expect = ["app", "--model", str(tmp_path)], "no config.json"
    elif case == "bad_port":
        argv, expect = ["app", "--port", "70000"], "--port must be in 1..65535"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if case == "port_in_use":
            argv, expect = ["app", "--model", checkpoint, "--port", str(busy.getsockname()[1])], "port"
        assert cli.main(argv) == 2
    assert expect in _one_error_line(capsys).split("error: ", 1)[1]


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_export_writes_a_space(checkpoint, tmp_path, capsys):
    out = tmp_path / "space"
    assert cli.main(["app", "--model", checkpoint, "--export", str(out)]) == 0
    assert "wrote a Hugging Face Space" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"app.py", "requirements.txt", "README.md", "config.json", "processor_config.json", "model.safetensors",
            *REMOTE_CODE_FILES} <= names
    meta = _front_matter((out / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == GRADIO_VERSION and meta["app_file"] == "app.py"
    assert len(meta["short_description"]) <= 60
    reqs = (out / "requirements.txt").read_text().split()
    assert f"gradio=={GRADIO_VERSION}" in reqs and "transformers==5.24.0" in reqs and any(r.startswith("av") for r in reqs)
    app = (out / "app.py").read_text()
    assert app.startswith(APP_MARKER) and "DEMO_CHECKPOINT = False" in app
    compile(app, "app.py", "exec")
    assert (out / "model.safetensors").read_bytes() == (Path(checkpoint) / "model.safetensors").read_bytes()
    # never replaced without --overwrite, then replaced as a whole (a stray file goes), the same bytes again
    (out / "stray.txt").write_text("x")
    assert cli.main(["app", "--model", checkpoint, "--export", str(out)]) == 2
    assert "pass --overwrite" in _one_error_line(capsys)
    assert cli.main(["app", "--model", checkpoint, "--export", str(out), "--overwrite"]) == 0
    assert not (out / "stray.txt").exists() and (out / "app.py").read_text() == app
    # someone else's folder: refused without --overwrite
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli.main(["app", "--model", checkpoint, "--export", str(foreign)]) == 2
    assert "pass --overwrite" in _one_error_line(capsys) and (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["onto", "inside", "around"])
def test_export_never_onto_into_or_around_the_checkpoint(where, checkpoint, capsys):
    ckpt = Path(checkpoint)
    target = {"onto": ckpt, "inside": ckpt / "space", "around": ckpt.parent}[where]
    before = sorted(p.name for p in ckpt.iterdir())
    assert cli.main(["app", "--model", checkpoint, "--export", str(target), "--overwrite"]) == 2
    line = _one_error_line(capsys)
    assert "checkpoint" in line or "input of this command" in line, line
    assert sorted(p.name for p in ckpt.iterdir()) == before


def test_export_of_the_demo_checkpoint_says_so_and_adds_the_code(tmp_path, capsys):
    out = tmp_path / "demo_space"
    demo = demo_checkpoint_path()
    assert cli.main(["app", "--export", str(out)]) == 0
    app = (out / "app.py").read_text()
    assert "DEMO_CHECKPOINT = True" in app
    readme = (out / "README.md").read_text()
    assert "synthetic" in readme and "This folder carries no code" not in readme
    config = json.loads((out / "config.json").read_text())
    assert "AutoModel" in config["auto_map"] and "video-grounding" in config["custom_pipelines"]
    assert not any((Path(demo) / f).exists() for f in REMOTE_CODE_FILES)  # the source is untouched
