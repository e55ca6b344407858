"""``bridge-stg app``: ground videos in the browser (a Gradio page), or write that page as a Hugging Face Space.

Examples::

    bridge-stg app                                   # the demo checkpoint, http://127.0.0.1:7860
    bridge-stg app --model path/to/checkpoint --host 0.0.0.0 --port 8080
    bridge-stg app --model path/to/checkpoint --export my_space      # a Space folder: checkpoint + app.py + requirements.txt

The page (:class:`bridge_stg.evaluation.app.GroundingPage`): upload a video or pick a synthetic example, type one or
several queries (one per line), choose the sampling fps, the frame budget and the score threshold, and get the
annotated video (box, score, query, timeline bar of the span), each query's span in frames and seconds, a plot of the
per-frame scores and the JSON result (as ``bridge-stg ground --json`` writes it). The answers come from the same
``video-grounding`` pipeline as ``bridge-stg ground``, after the same checks: bad input is one line on the page, and
the page keeps serving. Without ``--model`` the page uses the demo checkpoint shipped with the package and says that
it knows synthetic shapes only.

The page needs the ``[app]`` extra (Gradio): ``pip install "bridge-stg[app]"``; without it the command says so in one
line (exit code 2). ``--export`` needs no Gradio: it writes ``DIR`` (:mod:`bridge_stg.model_cards.space`), which must
not exist or be empty unless ``--overwrite`` (then it is replaced as a whole), under a temporary name renamed at the
end; it is never the checkpoint folder, inside it, or a folder holding it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

PROG = "bridge-stg app"


@dataclass
class AppArguments:
    """Options of ``bridge-stg app``."""

    model: str | None = field(default=None, metadata={
        "help": "Bridge-STG checkpoint folder. Default: the demo checkpoint shipped with the package (synthetic shapes "
                "only)."})
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (0.0.0.0: every interface)"})
    port: int = field(default=7860, metadata={"help": "port to serve on"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda:0"})
    dtype: str = field(default="auto", metadata={"help": "weights dtype: auto (as saved), float32, bfloat16, float16"})
    export: str | None = field(default=None, metadata={
        "help": "write a Hugging Face Space folder here instead of serving: the checkpoint, app.py, requirements.txt "
                "and the Space's README.md"})
    overwrite: bool = field(default=False, metadata={"help": "replace a non-empty --export folder"})


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(AppArguments, prog=PROG, description=(
        "Ground sentences in videos in the browser (Gradio), or write that page as a Hugging Face Space (--export)."))


def export_space(args: AppArguments) -> int:
    """``--export DIR``: the Space folder, staged and renamed at the end."""
    from bridge_stg.commands.ground import _resolve_model
    from bridge_stg.errors_bridge_stg import OutputExistsError
    from bridge_stg.model_cards.space import APP_MARKER, write_space

    from .common import plan_output_folder, staged_folder

    model_dir, is_demo = _resolve_model(args.model)
    src, out = Path(model_dir).resolve(), Path(os.path.abspath(args.export)).resolve()
    if src in out.parents:
        raise OutputExistsError(f"--export {args.export}: is inside the checkpoint folder {model_dir}; choose another path")
    app_py = out / "app.py"
    if not args.overwrite and app_py.is_file() and app_py.read_text(encoding="utf-8", errors="replace").startswith(APP_MARKER):
        raise OutputExistsError(f"--export {args.export}: holds a Space written before by `{PROG} --export`; pass "
                                "--overwrite to replace it, or choose another folder")
    plan = plan_output_folder(args.export, args.overwrite, "--export", PROG, written_by_us=lambda _: False,
                              inputs=[model_dir])
    with staged_folder(plan, PROG) as tmp:
        names = write_space(tmp, model_dir, is_demo=is_demo)
    print(f"wrote a Hugging Face Space to {args.export} ({len(names)} files: the checkpoint, app.py, requirements.txt, "
          "README.md). Publish it with huggingface_hub.upload_folder(repo_id=..., repo_type='space', "
          f"folder_path={args.export!r}), or run it here with: cd {args.export} && python app.py")
    return 0


def serve(args: AppArguments) -> int:
    """Serve the page until interrupted."""
    from bridge_stg.errors_bridge_stg import BridgeSTGError
    from bridge_stg.evaluation.app import GroundingPage, import_gradio

    if not 0 < args.port < 65536:
        raise BridgeSTGError(f"--port must be in 1..65535, got {args.port}")
    import_gradio()  # missing extra: one line, before the model is loaded
    page = GroundingPage(args.model, device=args.device, dtype=args.dtype)
    if page.is_demo:
        print(f"{PROG}: no --model given: using the demo checkpoint shipped with bridge-stg ({page.model_dir}). It is "
              "trained on synthetic shapes only and knows nothing about real videos.", file=sys.stderr)
    page.launch(host=args.host, port=args.port, block=True)  # Gradio prints the address; Ctrl-C stops it
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``bridge-stg app``; returns the exit code (2 on bad input, with one line on stderr)."""
    from .common import run_command

    def body(args_: list[str]) -> int:
        (args,) = build_parser().parse_args_into_dataclasses(args=args_)
        return export_space(args) if args.export is not None else serve(args)

    return run_command(PROG, body, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
