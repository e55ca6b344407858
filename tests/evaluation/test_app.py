"""The browser page's logic (`bridge_stg.evaluation.app.GroundingPage`), called as the page calls it: its answers equal
the `video-grounding` pipeline's for the same inputs; every bad input the command line rejects is one line on the page
and the page keeps serving; the page builds (Gradio) with the demo checkpoint's limits stated; Gradio is imported only
when the page is built."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import av
import pytest

from bridge_stg.commands.ground import format_summary, load_grounder
from bridge_stg.evaluation.app import DEMO_NOTE, GRADIO_VERSION, GroundingPage, split_queries
from bridge_stg.model_cards.hub import save_for_hub
from bridge_stg.video_io_bridge_stg import probe_video
from helpers_grounding import check_result, synthetic_clip, tiny_model_and_processor

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(compact_tokenizer, tmp_path_factory):
    model, processor = tiny_model_and_processor(compact_tokenizer, seed=3)
    return save_for_hub(model, processor, tmp_path_factory.mktemp("app") / "ckpt")


@pytest.fixture(scope="module")
def page(checkpoint, tmp_path_factory):
    return GroundingPage(checkpoint, workdir=tmp_path_factory.mktemp("app_work"), keep=2)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("app_clip") / "clip.mp4"
    return str(path), synthetic_clip(path, seed=5)


def test_answers_equal_the_pipeline(page, checkpoint, clip_file):
    """The page's results are the pipeline's (built on its own from the folder, as `bridge-stg ground` does), for one
    query and for several (one per line), with and without options; the JSON download, the summary, the span lines
    and the annotated video agree with them."""
    path, clip = clip_file
    grounder = load_grounder(checkpoint)
    for text, queries, options in (
        (clip.query, [clip.query], {}),
        (f"{clip.query}\n\n  the blue circle  \n", [clip.query, "the blue circle"], {}),
        (clip.query, [clip.query], {"sample_fps": 5.0, "max_frames": 8, "threshold": 0.0}),
    ):
        ans = page.answer(path, text, **options)
        assert ans.ok and ans.status.startswith("grounded "), ans.status
        assert ans.results == grounder(path, text=queries, **options)
        for res, q in zip(ans.results, queries):
            check_result(res, clip.num_frames, clip.width, clip.height, clip.fps, q)
            (s, e), (a, b) = res["span"], res["span_seconds"]
            assert f"frames [{s}, {e}) · {a:.2f} s – {b:.2f} s" in ans.span_text
        payload = json.loads(Path(ans.json_file).read_text())
        assert payload["results"] == ans.results and payload["video"] == "clip.mp4" and not payload["demo_checkpoint"]
        assert payload["video_info"]["num_frames"] == clip.num_frames
        assert ans.summary == format_summary(ans.results, probe_video(path))
        with av.open(ans.video) as c:
            assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].frames in (0, clip.num_frames)
            assert sum(1 for _ in c.decode(video=0)) == clip.num_frames
        axes = ans.figure.axes[0]
        assert len(axes.lines) == len(queries)
    # only the last `keep` answers' files stay in the work folder
    assert len([p for p in page.workdir.iterdir() if p.name.startswith("answer-")]) == 2


@pytest.mark.parametrize("case", ["corrupt", "not_a_video", "missing", "no_video", "empty_query", "blank_lines", "bad_fps",
                                  "odd_max_frames", "fractional_max_frames", "bad_threshold"])
def test_bad_input_is_one_line_and_the_page_keeps_serving(case, page, clip_file, tmp_path):
    path, clip = clip_file
    video, text, options, expect = path, clip.query, {}, None
    if case == "corrupt":
        video = tmp_path / "broken.mp4"
        video.write_bytes(Path(path).read_bytes()[:300])
        video, expect = str(video), "broken.mp4"
    elif case == "not_a_video":
        video = tmp_path / "notes.mp4"
        video.write_text("not a video\n" * 20)
        video, expect = str(video), "notes.mp4: cannot open as a video"
    elif case == "missing":
        video, expect = str(tmp_path / "nope.mp4"), "nope.mp4: no such file"
    elif case == "no_video":
        video, expect = None, "no video given"
    elif case == "empty_query":
        text, expect = "   ", "no query given"
    elif case == "blank_lines":
        text, expect = "\n \n", "no query given"
    elif case == "bad_fps":
        options, expect = {"sample_fps": -1.0}, "sample_fps must be a positive number"
    elif case == "odd_max_frames":
        options, expect = {"max_frames": 7.0}, "max_frames must be an even integer >= 2"
    elif case == "fractional_max_frames":
        options, expect = {"max_frames": 8.5}, "max_frames must be an even integer >= 2"
    else:
        options, expect = {"threshold": 1.5}, "threshold must be a score in [0, 1]"
    ans = page.answer(video, text, **options)
    assert not ans.ok and ans.video is None and ans.json_file is None and ans.span_text == ""
    assert ans.status.startswith("error: ") and "\n" not in ans.status and "Traceback" not in ans.status
    assert expect in ans.status, ans.status
    assert page.answer(path, clip.query).ok  # still serving


def test_the_command_line_rejects_the_same_inputs(checkpoint, clip_file, capsys):
    """The page's checks are the command's: the same option values give the same message (`--` before its name)."""
    from bridge_stg.commands import cli

    path, clip = clip_file
    for option, value in (("--sample_fps", "0"), ("--max_frames", "7"), ("--threshold", "2")):
        assert cli.main(["ground", path, clip.query, "--model", checkpoint, option, value, "--no_progress"]) == 2
        line = capsys.readouterr().err.strip()
    assert line.startswith("bridge-stg ground: error: --threshold must be a score in [0, 1]")


def test_an_unexpected_failure_is_one_line_with_the_traceback_in_the_log(page, clip_file, monkeypatch, capsys):
    path, clip = clip_file

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(page, "grounder", broken)
    ans = page.answer(path, clip.query)
    assert ans.status == "error: unexpected RuntimeError: boom second line (traceback in the server log)"
    assert "Traceback" in capsys.readouterr().err


def test_split_queries():
    assert split_queries("a\n\n b \n") == ["a", "b"] and split_queries(None) == [] and split_queries(["x"]) == ["x"]


def test_page_builds_and_states_the_demo_checkpoints_limits(checkpoint, tmp_path):
    """The Gradio page has every input and output the browser test drives; with the demo checkpoint it says that the
    model knows synthetic shapes only; its examples are synthetic clips."""
    pytest.importorskip("gradio", reason='the [app] extra is not installed (pip install "bridge-stg[app]")')
    demo = GroundingPage(checkpoint, workdir=tmp_path, is_demo=True)
    assert "synthetic" in demo.model_note() and DEMO_NOTE in demo.model_note()
    blocks = demo.build()
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    assert {"model-note", "video-in", "query", "sample-fps", "max-frames", "threshold", "ground-button", "status",
            "video-out", "span", "score-plot", "json-file", "summary"} <= ids
    note = next(b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "model-note")
    assert "synthetic clips of coloured shapes only" in note.value
    examples = demo.examples()
    assert len(examples) == 2 and all(Path(v).is_file() for v, _ in examples) and "\n" in examples[1][1]
    other = GroundingPage(checkpoint, workdir=tmp_path / "other")
    assert not other.is_demo and "synthetic" not in other.model_note()


@pytest.mark.slow
def test_gradio_is_imported_only_when_the_page_is_built():
    """No module of the package imports Gradio when imported (the app's modules and the Space writer included). Slow:
    it imports every module, the training ones too, in a fresh interpreter (10 s to 40 s on 2 loaded cores)."""
    script = (
        "import importlib, pkgutil, sys\n"
        "import bridge_stg\n"
        "names = ['bridge_stg.' + m for m in bridge_stg._MODEL_NAMES.values()]\n"
        "for pkg in ('processing', 'training', 'evaluation', 'commands', 'model_cards'):\n"
        "    mod = importlib.import_module('bridge_stg.' + pkg)\n"
        "    names += ['bridge_stg.%s.%s' % (pkg, m.name) for m in pkgutil.iter_modules(mod.__path__)]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "assert 'bridge_stg.evaluation.app' in sys.modules and 'bridge_stg.commands.app' in sys.modules\n"
        "print('GRADIO', 'gradio' in sys.modules, len(names))\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^GRADIO False \d+$", res.stdout, re.M), res.stdout


def test_gradio_pin_is_the_app_extra():
    """setup.py's [app] extra pins the Gradio of GRADIO_VERSION (the sdk_version of exported Spaces)."""
    setup = (ROOT / "setup.py").read_text()
    app_extra = re.search(r'"app":\s*\[([^\]]*)\]', setup).group(1)
    assert f'"gradio=={GRADIO_VERSION}"' in app_extra
