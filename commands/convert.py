"""``bridge-stg convert <format> ...``: turn a public STVG annotation format into a ``datasets`` folder.

Formats (subcommands):

  vidstg    --sentences FILE --vidor DIR --split NAME --out DIR [--video-root DIR]
  tubedetr  --annotations FILE --split NAME --out DIR [--video-root DIR]
  stcat     --annotations FILE --split NAME --out DIR [--vidor DIR] [--video-root DIR]
  hcstvg    --annotations FILE --version 1|2 --split NAME --out DIR [--video-root DIR]
  tvg       --annotations FILE --split NAME --out DIR --video-root DIR
  rec       --annotations FILE --split NAME --out DIR [--video-root DIR]

Every run writes ``DIR/data/<split>-00000-of-00001.parquet``, ``DIR/README.md`` (dataset card) and
``DIR/conversion_report.json``, and prints the report. A folder written by an earlier ``bridge-stg convert``
(only ``data/``, ``README.md`` and ``conversion_report.json``) takes the new split beside its others (a split of
the same name, and the run that wrote it, are replaced, and the command says so); any other non-empty folder is
refused without ``--overwrite`` (which replaces it), and a folder that holds an input is always refused. Bad input
exits with code 2 and one line naming the file, the record and the field (``--debug`` for the traceback).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from transformers import HfArgumentParser
from transformers.utils import logging

from bridge_stg.errors_bridge_stg import BridgeSTGError

from bridge_stg.commands.common import folder_holds_only, plan_output_folder, run_command, staged_folder
from bridge_stg.processing.writer import REPORT_NAME, write_dataset

logger = logging.get_logger(__name__)


@dataclass
class _Common:
    split: str = field(metadata={"help": "split name of the rows (e.g. train, val, test)"})
    out: str = field(metadata={"help": "output dataset folder"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace --out when it is a non-empty folder that bridge-stg convert did not write"})


@dataclass
class VidSTGArguments(_Common):
    """Raw VidSTG: sentence file + VidOR per-video annotations."""

    sentences: str = field(default="", metadata={"help": "VidSTG {split}_annotations.json"})
    vidor: str = field(default="", metadata={"help": "VidOR annotation folder (searched recursively for <vid>.json)"})
    video_root: Optional[str] = field(default=None, metadata={"help": "VidOR video folder; rows with a missing video are dropped (reported)"})
    check_videos: bool = field(default=False, metadata={"help": "open every video header; unreadable videos drop their rows"})
    drop_incomplete_tubes: bool = field(default=False, metadata={"help": "drop rows whose tube misses boxes instead of reporting them"})
    embed_videos: bool = field(default=False, metadata={"help": "store the video bytes in the video_bytes column (small sets only)"})
    no_progress: bool = field(default=False, metadata={"help": "hide progress bars"})


@dataclass
class TubeDETRArguments(_Common):
    """TubeDETR preprocessed VidSTG {split}.json."""

    annotations: str = field(default="", metadata={"help": "TubeDETR {split}.json"})
    video_root: Optional[str] = field(default=None, metadata={"help": "TubeDETR <vidstg root>/video folder"})
    check_videos: bool = field(default=False, metadata={"help": "open every video header"})
    drop_incomplete_tubes: bool = field(default=False, metadata={"help": "drop rows whose tube misses boxes"})
    embed_videos: bool = field(default=False, metadata={"help": "store the video bytes in the video_bytes column"})
    no_progress: bool = field(default=False, metadata={"help": "hide progress bars"})


@dataclass
class STCATArguments(_Common):
    """STCAT / CG-STVG vstg_annos/{split}.json (the pickled data_cache is never read)."""

    annotations: str = field(default="", metadata={"help": "vstg_annos/{split}.json"})
    vidor: Optional[str] = field(default=None, metadata={"help": "bbox_annos / VidOR folder: true frame counts and video paths"})
    video_template: str = field(default="{vid}.mp4", metadata={"help": "video path when --vidor is not given"})
    video_root: Optional[str] = field(default=None, metadata={"help": "video folder"})
    check_videos: bool = field(default=False, metadata={"help": "open every video header"})
    drop_incomplete_tubes: bool = field(default=False, metadata={"help": "drop rows whose tube misses boxes"})
    embed_videos: bool = field(default=False, metadata={"help": "store the video bytes in the video_bytes column"})
    no_progress: bool = field(default=False, metadata={"help": "hide progress bars"})


@dataclass
class HCSTVGArguments(_Common):
    """HC-STVG v1 / v2 raw JSON keyed by video file name."""

    annotations: str = field(default="", metadata={"help": "HC-STVG annotation JSON"})
    version: int = field(default=0, metadata={"help": "HC-STVG version: 1 or 2"})
    video_root: Optional[str] = field(default=None, metadata={"help": "video folder"})
    check_videos: bool = field(default=False, metadata={"help": "open every video header and report img_num / size mismatches"})
    embed_videos: bool = field(default=False, metadata={"help": "store the video bytes in the video_bytes column"})
    no_progress: bool = field(default=False, metadata={"help": "hide progress bars"})


@dataclass
class TVGArguments(_Common):
    """Charades-STA style lines 'VIDEO_ID START END##sentence' (task tvg)."""

    annotations: str = field(default="", metadata={"help": "text file, one query per line"})
    video_root: str = field(default="", metadata={"help": "video folder (required: fps and frame counts come from the headers)"})
    video_template: str = field(default="{vid}.mp4", metadata={"help": "video path of an id"})
    embed_videos: bool = field(default=False, metadata={"help": "store the video bytes in the video_bytes column"})
    no_progress: bool = field(default=False, metadata={"help": "hide progress bars"})


@dataclass
class RECArguments(_Common):
    """RefCOCO-style JSON list of {image, width, height, sentence, bbox} (task rec)."""

    annotations: str = field(default="", metadata={"help": "JSON list"})
    video_root: Optional[str] = field(default=None, metadata={"help": "image folder; rows with a missing image are dropped"})
    embed_videos: bool = field(default=False, metadata={"help": "store the image bytes in the video_bytes column"})
    no_progress: bool = field(default=False, metadata={"help": "hide progress bars"})


def _required(args: Any, *names: str) -> None:
    for n in names:
        if getattr(args, n) in ("", None, 0):
            raise BridgeSTGError(f"--{n.replace('_', '-')} is required")


def _run_vidstg(a: VidSTGArguments) -> tuple[list, Any, str]:
    from bridge_stg.processing.vidstg import convert_vidstg

    _required(a, "sentences", "vidor")
    rows, rep = convert_vidstg(a.sentences, a.vidor, a.split, video_root=a.video_root, check_video_headers=a.check_videos,
                               drop_incomplete_tubes=a.drop_incomplete_tubes, progress=not a.no_progress)
    return rows, rep, "VidSTG"


def _run_tubedetr(a: TubeDETRArguments) -> tuple[list, Any, str]:
    from bridge_stg.processing.vidstg import convert_tubedetr

    _required(a, "annotations")
    rows, rep = convert_tubedetr(a.annotations, a.split, video_root=a.video_root, check_video_headers=a.check_videos,
                                 drop_incomplete_tubes=a.drop_incomplete_tubes, progress=not a.no_progress)
    return rows, rep, "VidSTG (from TubeDETR format)"


def _run_stcat(a: STCATArguments) -> tuple[list, Any, str]:
    from bridge_stg.processing.vidstg import convert_stcat

    _required(a, "annotations")
    rows, rep = convert_stcat(a.annotations, a.split, bbox_annos=a.vidor, video_template=a.video_template, video_root=a.video_root,
                              check_video_headers=a.check_videos, drop_incomplete_tubes=a.drop_incomplete_tubes, progress=not a.no_progress)
    return rows, rep, "VidSTG (from STCAT vstg_annos)"


def _run_hcstvg(a: HCSTVGArguments) -> tuple[list, Any, str]:
    from bridge_stg.processing.hcstvg import convert_hcstvg

    _required(a, "annotations", "version")
    rows, rep = convert_hcstvg(a.annotations, a.version, a.split, video_root=a.video_root, check_video_headers=a.check_videos,
                               progress=not a.no_progress)
    return rows, rep, f"HC-STVG v{a.version}"


def _run_tvg(a: TVGArguments) -> tuple[list, Any, str]:
    from bridge_stg.processing.multitask import convert_tvg

    _required(a, "annotations", "video_root")
    rows, rep = convert_tvg(a.annotations, a.split, video_root=a.video_root, video_template=a.video_template, progress=not a.no_progress)
    return rows, rep, "temporal grounding (Charades-STA style)"


def _run_rec(a: RECArguments) -> tuple[list, Any, str]:
    from bridge_stg.processing.multitask import convert_rec

    _required(a, "annotations")
    rows, rep = convert_rec(a.annotations, a.split, video_root=a.video_root, progress=not a.no_progress)
    return rows, rep, "referring expressions (RefCOCO style)"


FORMATS: dict[str, tuple[type, Callable[[Any], tuple[list, Any, str]]]] = {
    "vidstg": (VidSTGArguments, _run_vidstg),
    "tubedetr": (TubeDETRArguments, _run_tubedetr),
    "stcat": (STCATArguments, _run_stcat),
    "hcstvg": (HCSTVGArguments, _run_hcstvg),
    "tvg": (TVGArguments, _run_tvg),
    "rec": (RECArguments, _run_rec),
}


def written_by_convert(folder: Path) -> bool:
    """A folder of an earlier ``bridge-stg convert``: ``conversion_report.json`` and nothing but its ``data/`` and
    ``README.md`` (a synthetic set also has ``videos/``: not ours to merge into)."""
    return folder_holds_only(folder, ("data", "README.md", REPORT_NAME), REPORT_NAME)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bridge-stg convert``; returns the exit code (2 on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    fmt = argv[0]
    if fmt not in FORMATS:
        print(f"bridge-stg convert: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}", file=sys.stderr)
        return 2
    return run_command(f"bridge-stg convert {fmt}", lambda rest: _convert(fmt, rest), argv[1:])


def _convert(fmt: str, argv: list[str]) -> int:
    cls, run = FORMATS[fmt]
    prog = f"bridge-stg convert {fmt}"
    parser = HfArgumentParser(cls, prog=prog, description=cls.__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    inputs = [getattr(args, name, None) or None for name in ("sentences", "vidor", "annotations", "video_root")]
    plan = plan_output_folder(args.out, args.overwrite, "--out", "bridge-stg convert", written_by_convert, inputs=inputs)
    rows, report, title = run(args)
    embed_root = args.video_root if args.embed_videos else None
    if args.embed_videos and not embed_root:
        raise BridgeSTGError("--embed-videos needs --video-root")
    write = dict(title=f"{title}, split {args.split}", description=f"Converted by `{prog}`.", embed_videos_from=embed_root)
    if plan.action == "refresh":  # the new split joins the folder's others (write_dataset says what it replaces)
        write_dataset(args.out, {args.split: rows}, report, **write)
    else:
        with staged_folder(plan, "bridge-stg convert") as tmp:
            write_dataset(tmp, {args.split: rows}, report, **write)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
