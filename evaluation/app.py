"""The browser page of ``bridge-stg app``: upload a video (or pick a synthetic example), type one or several queries,
get the annotated video, the span of each query, a plot of the per-frame scores and the JSON result.

The page is a Gradio app (the optional extra ``[app]``: ``pip install "bridge-stg[app]"``); Gradio is imported only when
the page is built (:meth:`GroundingPage.build`), never when this module is imported. Everything the page shows comes
from :meth:`GroundingPage.answer`, a plain function that tests call directly:

```python
>>> from bridge_stg.evaluation.app import GroundingPage
>>> page = GroundingPage("path/to/checkpoint")            # None: the demo checkpoint shipped with the package
>>> answer = page.answer("clip.mp4", "the red square")    # one query per line for several
>>> answer.results                                         # the video-grounding pipeline's output, one dict per query
>>> answer.status                                          # "" or one line: "error: clip.mp4: cannot open as a video ..."
>>> page.launch(host="127.0.0.1", port=7860)               # serve the page (blocks)
```

The answers come from the ``video-grounding`` pipeline that ``bridge-stg ground`` uses (:func:`load_grounder`, the
installed classes), and the inputs pass the same checks first (:func:`bridge_stg.commands.ground.check_queries`,
:func:`check_options`, the video probe): every input the command line rejects is one line on the page (``error: ...``,
no traceback), and the page keeps serving. An unexpected failure (a bug) is one line on the page too, with the
traceback in the server's log.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from bridge_stg.errors_bridge_stg import BridgeSTGError, MissingDependencyError

#: the optional extra that installs Gradio, and the Gradio version it pins (setup.py; a test keeps them equal)
APP_EXTRA = "app"
GRADIO_VERSION = "6.31.0"
#: what the page says about the shipped demo checkpoint
DEMO_NOTE = (
    "**The model is the tiny demo checkpoint shipped with bridge-stg.** It was trained on synthetic clips of coloured "
    "shapes only (queries such as *the red square* or *a blue circle that moves left*). It knows nothing about real "
    "videos: on those its spans and boxes mean nothing. Try the synthetic examples below, or run "
    "`bridge-stg app --model DIR` with a checkpoint trained on real data."
)
#: seeds of the synthetic example clips offered on the page (``render_synthetic_clip(default_rng(seed))``)
EXAMPLE_SEEDS = (3, 11)


def import_gradio() -> Any:
    """The ``gradio`` module, or a :class:`MissingDependencyError` naming the extra that installs it."""
    try:
        import gradio
    except ImportError as err:
        raise MissingDependencyError(
            f'the browser app needs Gradio, which is not installed ({err}); install it with: pip install "bridge-stg[{APP_EXTRA}]"'
        ) from err
    return gradio


def split_queries(text: str | Sequence[str] | None) -> list[str]:
    """The queries of the page's text box: one per line, blank lines left out (a list is taken as it is)."""
    if text is None:
        return []
    if isinstance(text, str):
        return [line.strip() for line in text.splitlines() if line.strip()]
    return list(text)


@dataclass
class PageAnswer:
    """What the page shows for one request.

    Attributes:
        status: one line: ``"error: <message>"`` for bad input, else what was done (queries, seconds, model).
        results: the pipeline's output (one dict per query), ``None`` after an error.
        span_text: one line per query: its span in frames and in seconds (Markdown).
        summary: the text ``bridge-stg ground`` prints for the same inputs.
        video: the annotated mp4 (box, score, query, timeline bar), ``None`` after an error.
        json_file: the JSON result, as ``bridge-stg ground --json`` writes it.
        figure: a matplotlib figure of each query's per-frame score over time.
    """

    status: str
    results: list[dict[str, Any]] | None = None
    span_text: str = ""
    summary: str = ""
    video: str | None = None
    json_file: str | None = None
    figure: Any = None
    payload: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.results is not None


def span_lines(results: Sequence[dict[str, Any]]) -> str:
    """One Markdown line per query: ``query: frames [s, e) · a s – b s``."""
    lines = []
    for res in results:
        (s, e), (a, b) = res["span"], res["span_seconds"]
        lines.append(f"**{_escape(res['query'])}**: frames [{s}, {e}) · {a:.2f} s – {b:.2f} s "
                     f"({len(res['tube'])} boxes)")
    return "\n\n".join(lines)


def _escape(text: str) -> str:
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>" else c for c in text)


def score_figure(results: Sequence[dict[str, Any]], duration: float) -> Any:
    """A matplotlib figure of each query's per-frame presence score over time, its span shaded."""
    from matplotlib.figure import Figure

    from bridge_stg.evaluation.visualize import PALETTE

    fig = Figure(figsize=(6.4, 2.4), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for q, res in enumerate(results):
        colour = tuple(c / 255 for c in PALETTE[q % len(PALETTE)])
        a, b = res["span_seconds"]
        ax.axvspan(a, b, color=colour, alpha=0.12, lw=0)
        times = [t["time"] for t in res["tube"]]
        scores = [t["score"] for t in res["tube"]]
        label = res["query"] if len(res["query"]) <= 40 else res["query"][:37] + "..."
        ax.plot(times, scores, "o-", ms=3, lw=1.2, color=colour, label=label)
    ax.set_xlim(0, max(duration, 1e-6))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("box score")
    ax.grid(alpha=0.3)
    if results:
        ax.legend(loc="upper right", fontsize=8, frameon=False)
    return fig


class GroundingPage:
    """The page's logic and layout around one checkpoint's ``video-grounding`` pipeline.

    Args:
        model: a checkpoint folder, or ``None`` for the demo checkpoint shipped with the package (its limits are
            stated on the page).
        device, dtype: where and in which dtype the model runs (as ``bridge-stg ground``).
        workdir: folder of the files the page serves (annotated videos, JSON results, example clips); default a new
            temporary folder. Only the last ``keep`` answers are kept there.
        is_demo: whether the model is the demo checkpoint; default: ``model is None``. A Space exported from the demo
            checkpoint (``bridge-stg app --export``) passes ``True`` with the folder.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        workdir: str | os.PathLike | None = None,
        keep: int = 8,
        is_demo: bool | None = None,
    ) -> None:
        from bridge_stg.commands.ground import _resolve_model, load_grounder

        self.model_dir, demo = _resolve_model(None if model is None else os.fspath(model))
        self.is_demo = demo if is_demo is None else bool(is_demo)
        self.grounder = load_grounder(self.model_dir, device=device, dtype=dtype)
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="bridge-stg-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep = max(int(keep), 1)
        self._counter = itertools.count(1)
        self._lock = threading.Lock()  # one request at a time on the model (Gradio's queue does so too)
        self._examples: list[list[Any]] | None = None

    # ------------------------------------------------------------------------------------------------ answers
    def ground(
        self,
        video: str | os.PathLike | None,
        text: str | Sequence[str] | None,
        sample_fps: float | None = None,
        max_frames: float | None = None,
        threshold: float | None = None,
        progress: Callable[..., Any] | None = None,
    ) -> PageAnswer:
        """Check the inputs as ``bridge-stg ground`` does, ground, and write what the page shows; bad input raises
        the package's errors (:class:`BridgeSTGError`) or ``OSError``. ``progress(fraction, desc=...)`` is told what
        is being done."""
        from bridge_stg.commands.ground import check_options, check_queries, format_summary, result_payload
        from bridge_stg.evaluation.visualize import write_annotated_video
        from bridge_stg.processing.paths import write_text_atomic
        from bridge_stg.video_io_bridge_stg import probe_video

        report = progress or (lambda *args, **kwargs: None)
        started = time.perf_counter()
        report(0.0, desc="checking the inputs")
        queries = split_queries(text)
        check_queries(queries)
        options = check_options(sample_fps, max_frames, threshold, prefix="")
        if video is None or (isinstance(video, str) and not video.strip()):
            raise BridgeSTGError("no video given: upload a video file (or pick an example)")
        video = os.fspath(video)
        meta = probe_video(video)  # missing / corrupt / not a video: one line, before any decoding
        report(0.1, desc=f"decoding and grounding {len(queries)} quer{'y' if len(queries) == 1 else 'ies'}")
        results = self.grounder(video, text=list(queries), **options)
        out = self._new_answer_dir()
        stem = _safe_stem(video)
        report(0.6, desc="writing the annotated video")
        annotated = write_annotated_video(video, results, out / f"{stem}_grounded.mp4",
                                         progress=progress is not None)["output"]  # a tqdm bar the page follows
        payload = result_payload(os.path.basename(video), self.model_dir, self.is_demo, meta, results)
        json_path = out / f"{stem}_grounding.json"
        write_text_atomic(json_path, json.dumps(payload, indent=2))
        report(0.95, desc="plotting the scores")
        figure = score_figure(results, meta.duration)
        took = time.perf_counter() - started
        model = "the demo checkpoint (synthetic shapes only)" if self.is_demo else Path(self.model_dir).name
        status = (f"grounded {len(queries)} quer{'y' if len(queries) == 1 else 'ies'} in {meta.name} "
                  f"({meta.num_frames} frames, {meta.fps:g} fps) with {model} in {took:.1f} s")
        return PageAnswer(status=status, results=results, span_text=span_lines(results),
                          summary=format_summary(results, meta), video=str(annotated), json_file=str(json_path),
                          figure=figure, payload=payload)

    def answer(
        self,
        video: str | os.PathLike | None,
        text: str | Sequence[str] | None,
        sample_fps: float | None = None,
        max_frames: float | None = None,
        threshold: float | None = None,
        progress: Callable[..., Any] | None = None,
    ) -> PageAnswer:
        """What the page shows for these inputs: :meth:`ground`'s answer, or, for any failure, an answer whose
        ``status`` is one line ``error: <message>`` (bad input: the message of the package's error, as the command
        line prints it; anything else: the error's type and message, the traceback going to the server's log)."""
        from bridge_stg.commands.common import one_line

        try:
            with self._lock:
                return self.ground(video, text, sample_fps=sample_fps, max_frames=max_frames, threshold=threshold,
                                   progress=progress)
        except (BridgeSTGError, OSError) as err:
            return PageAnswer(status=f"error: {one_line(err)}")
        except Exception as err:  # a bug: the page keeps serving, the log keeps the traceback
            traceback.print_exc(file=sys.stderr)
            return PageAnswer(status=f"error: unexpected {type(err).__name__}: {one_line(err)} (traceback in the server log)")

    def _new_answer_dir(self) -> Path:
        """A new folder for one answer's files; the oldest beyond ``keep`` are removed (Gradio has copied them)."""
        path = self.workdir / f"answer-{next(self._counter):06d}"
        path.mkdir(parents=True)
        answers = sorted(p for p in self.workdir.iterdir() if p.is_dir() and p.name.startswith("answer-"))
        for old in answers[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def examples(self) -> list[list[Any]]:
        """Synthetic example clips (written once into ``workdir/examples``) with their queries: one with the target's
        query, one with the target's and a distractor's: ``[[video, text], ...]``."""
        if self._examples is None:
            import numpy as np

            from bridge_stg.processing.synthetic import render_synthetic_clip, write_mp4

            folder = self.workdir / "examples"
            folder.mkdir(exist_ok=True)
            rows = []
            for i, seed in enumerate(EXAMPLE_SEEDS):
                clip = render_synthetic_clip(np.random.default_rng(seed))
                path = folder / f"synthetic_{seed}.mp4"
                if not path.is_file():
                    write_mp4(path, clip.frames, clip.fps)
                text = clip.query
                others = [o for o in clip.objects if not o.is_target]
                if i % 2 and others:
                    text += f"\nthe {others[0].colour} {others[0].shape}"
                rows.append([str(path), text])
            self._examples = rows
        return self._examples

    # ------------------------------------------------------------------------------------------------ the page
    def model_note(self) -> str:
        """The page's words about the model: the demo checkpoint's limits, or the checkpoint's folder."""
        proc = self.grounder.processor
        sampling = f"Frames sampled at {proc.sample_fps:g} fps, at most {proc.max_frames} (change it under *Options*)."
        if self.is_demo:
            return f"{DEMO_NOTE}\n\n{sampling}"
        return f"**Model:** `{Path(self.model_dir).resolve().name}`. {sampling}"

    def build(self) -> Any:
        """The Gradio page (``gradio.Blocks``); element ids (``elem_id``) name every input and output."""
        gr = import_gradio()

        def on_submit(video, text, sample_fps, max_frames, threshold, progress=gr.Progress(track_tqdm=True)):
            ans = self.answer(video, text, sample_fps, max_frames, threshold, progress=progress)
            return (ans.status, ans.video, ans.span_text, ans.figure, ans.json_file, ans.summary)

        with gr.Blocks(title="bridge-stg: video grounding", analytics_enabled=False) as page:
            gr.Markdown("# bridge-stg: spatio-temporal video grounding\n"
                        "Upload a video, type a sentence: the model returns **when** it happens (a span of frames) and "
                        "**where** (one box per frame of the span).")
            gr.Markdown(self.model_note(), elem_id="model-note")
            with gr.Row():
                with gr.Column():
                    video_in = gr.Video(label="video", sources=["upload"], include_audio=True, height=320, elem_id="video-in")
                    text_in = gr.Textbox(label="query (one per line for several)", lines=2, elem_id="query",
                                         placeholder="the red square")
                    with gr.Accordion("Options", open=False):
                        fps_in = gr.Number(label="sample fps (empty: the checkpoint's)", value=None, elem_id="sample-fps")
                        max_in = gr.Number(label="max frames (even; empty: the checkpoint's)", value=None,
                                           elem_id="max-frames")
                        thr_in = gr.Number(label="threshold: hide boxes scored below (0-1; empty: none)", value=None,
                                           elem_id="threshold")
                    button = gr.Button("Ground", variant="primary", elem_id="ground-button")
                    gr.Examples(self.examples(), inputs=[video_in, text_in], label="synthetic examples")
                with gr.Column():
                    status = gr.Markdown("", elem_id="status")
                    video_out = gr.Video(label="annotated video", interactive=False, loop=True, height=320, elem_id="video-out")
                    span = gr.Markdown("", elem_id="span")
                    plot = gr.Plot(label="box score per frame", elem_id="score-plot")
                    json_out = gr.File(label="JSON result", interactive=False, elem_id="json-file")
                    summary = gr.Textbox(label="summary (as bridge-stg ground prints it)", lines=6, interactive=False,
                                         elem_id="summary")
            inputs = [video_in, text_in, fps_in, max_in, thr_in]
            outputs = [status, video_out, span, plot, json_out, summary]
            button.click(on_submit, inputs=inputs, outputs=outputs, concurrency_limit=1)
        return page

    def launch(self, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet: bool = False) -> Any:
        """Build and serve the page on ``host:port``; with ``block=False`` return at once (the ``gradio.Blocks``,
        serving in a thread: ``.close()`` it)."""
        page = self.build()
        page.queue(default_concurrency_limit=1)
        page.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet, share=False,
                    ssr_mode=False, allowed_paths=[str(self.workdir)], show_error=False)
        return page


def _safe_stem(video: str) -> str:
    stem = Path(video).stem or "video"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:60] or "video"


__all__ = ["APP_EXTRA", "DEMO_NOTE", "GRADIO_VERSION", "GroundingPage", "PageAnswer", "import_gradio", "score_figure", "span_lines",
           "split_queries"]
