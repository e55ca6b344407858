"""``bridge-stg predict``: ground every query of a dataset split with a checkpoint and write the prediction rows that
``bridge-stg evaluate`` scores.

Examples::

    bridge-stg synth --num-videos 40 --out data/synth --seed 1
    bridge-stg predict --dataset data/synth --split test --model demo_out/checkpoint --out preds.jsonl
    bridge-stg evaluate --references data/synth --split test --predictions preds.jsonl --protocol tubedetr

The rows come from :func:`bridge_stg.training.predict.predict_grounding` (the path ``bridge-stg train`` evaluates
with): one JSON object per query, ``query_id``, ``span`` (half-open frame ids), ``frame_ids`` / ``boxes`` / ``scores``
on every frame of the predicted span that ``--protocol`` scores (:func:`~bridge_stg.training.predict.eval_frame_ids_for`),
``sampled_frame_ids`` and ``span_source``. Every row of the split is grounded; a row that cannot be (its video is
missing or unreadable) stops the command with one line naming it, and nothing done so far is lost.

Resuming: the rows are appended to ``OUT.partial`` as they are grounded; at the end the whole file is written to
``OUT`` (temporary name, renamed) and ``OUT.partial`` is removed. A rerun continues after the query ids already in
``OUT`` / ``OUT.partial``; it checks that they are queries of the dataset split and have boxes only on frames the
protocol scores (rows of other data or another ``--protocol`` are refused), so run it with the same ``--model``.
``--overwrite`` starts afresh (``OUT`` is replaced at the end). Exit codes: 0 success, 2 bad input (one line on
stderr; ``--debug`` for the traceback), 130 interrupted (rerun to continue).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from transformers import HfArgumentParser
from transformers.utils import logging

from bridge_stg.commands.common import check_output_file, run_command, write_text_atomic
from bridge_stg.errors_bridge_stg import AnnotationError, BridgeSTGError, PredictionError
from bridge_stg.evaluation.metrics import PROTOCOLS

logger = logging.get_logger(__name__)
PROG = "bridge-stg predict"
#: suffix of the file the rows are appended to while the command runs
PARTIAL_SUFFIX = ".partial"


@dataclass
class PredictArguments:
    """Options of ``bridge-stg predict``."""

    dataset: str = field(metadata={"help": "dataset folder (bridge-stg convert / synth): DIR/data/<split>-*.parquet"})
    model: str = field(metadata={"help": "Bridge-STG checkpoint folder (bridge-stg train / demo, save_for_hub)"})
    out: str = field(metadata={"help": "prediction rows (JSONL): the --predictions of bridge-stg evaluate"})
    split: str | None = field(default=None, metadata={"help": "split to ground (default: the folder's only split)"})
    video_root: str | None = field(default=None, metadata={
        "help": "folder the rows' 'video' paths are relative to (default: the dataset folder)"})
    protocol: str | None = field(default=None, metadata={"choices": list(PROTOCOLS), "help": (
        "metric protocol the boxes are written for (default: tubedetr when every row's fps allows its 5 fps grid, "
        "else sampled); score with the same --protocol")})
    batch_size: int = field(default=8, metadata={"help": "queries grounded together in one model call"})
    sample_fps: float | None = field(default=None, metadata={
        "help": "frames sampled per second of video (default: the checkpoint's processor)"})
    max_frames: int | None = field(default=None, metadata={
        "help": "at most this many sampled frames per query (default: the checkpoint's processor)"})
    device: str = field(default="cpu", metadata={"help": "torch device, e.g. cpu or cuda:0"})
    dtype: str = field(default="auto", metadata={"help": "weights dtype: auto (as saved), float32, bfloat16, float16"})
    overwrite: bool = field(default=False, metadata={
        "help": "start afresh: ignore the rows already in --out (replaced at the end) and in --out.partial"})
    progress: bool = field(default=True, metadata={"help": "progress bar on stderr (--no_progress to hide)"})


def partial_path(out: str | os.PathLike[str]) -> Path:
    """The file the rows of ``out`` are appended to while ``bridge-stg predict`` runs."""
    return Path(f"{os.fspath(out)}{PARTIAL_SUFFIX}")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    from bridge_stg.evaluation.io import read_predictions

    return [dict(r, _line=n) for n, r in enumerate(read_predictions(path), 1)]


def load_done_rows(
    paths: Sequence[Path], references: Sequence[Mapping[str, Any]], where: str, protocol: str, packed: Any = None,
) -> dict[str, dict[str, Any]]:
    """The prediction rows already written (``paths`` in order; a query in two files must have the same row in both),
    checked against ``references`` (the dataset split, named ``where`` in messages; ``packed``: their
    ``pack_references``, computed when not given): every query id must be one of theirs, each row a valid prediction
    (:func:`pack_predictions`) with boxes only on frames ``protocol`` scores. Returns ``{query_id: row}``."""
    from bridge_stg.evaluation.packing import pack_predictions, pack_references
    from bridge_stg.training.predict import eval_frame_ids_for

    packed = packed if packed is not None else pack_references(references, source=where)

    index = {str(r["query_id"]): i for i, r in enumerate(references)}
    done: dict[str, dict[str, Any]] = {}
    for path in paths:
        rows = _read_rows(path)
        for row in rows:
            qid, line = str(row.get("query_id")), row.pop("_line")
            if qid not in index:
                raise PredictionError(
                    f"{path}: line {line}: query_id {qid!r} is not a query of {where}: the file holds predictions for "
                    "other data; choose another --out, or pass --overwrite to replace it")
            if qid in done and done[qid] != row:
                raise PredictionError(f"{path}: line {line}: query_id {qid!r} has another prediction in "
                                      f"{paths[0]}; pass --overwrite to start afresh")
            done[qid] = row
        pack_predictions(rows, packed, source=str(path))
    if protocol != "sampled" and done:
        refs = [references[index[q]] for q in done]
        for ref, grid in zip(refs, eval_frame_ids_for(refs, protocol)):
            extra = sorted(set(done[str(ref["query_id"])]["frame_ids"]) - set(grid))
            if extra:
                raise PredictionError(
                    f"query_id {ref['query_id']!r} in {' / '.join(map(str, paths))}: boxes on frames the {protocol} protocol "
                    f"does not score (e.g. frame {extra[0]}): written with another --protocol; pass that --protocol, or "
                    "--overwrite to start afresh")
    return done


def predict_dataset(args: PredictArguments) -> dict[str, Any]:
    """Ground every row of the split not yet in ``args.out`` and write the complete file; return a summary
    (``rows``, ``new``, ``kept``, ``split``, ``protocol``, ``out``)."""
    from bridge_stg.evaluation.io import dataset_split_files, read_dataset_split

    if args.batch_size < 1:
        raise BridgeSTGError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.protocol is not None and args.protocol not in PROTOCOLS:  # argparse checks the command line
        raise BridgeSTGError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {args.protocol!r}")
    split, rows = read_dataset_split(args.dataset, args.split)
    where = f"{args.dataset} split {split!r}"
    if not rows:
        raise AnnotationError(f"{where}: no rows to ground")
    out, partial = Path(args.out), partial_path(args.out)
    inputs = [*dataset_split_files(args.dataset, split)[1], args.model]
    check_output_file(out, True, "--out", inputs=inputs)  # existing rows are continued, not refused
    check_output_file(partial, True, "--out", inputs=inputs)

    from bridge_stg.commands.ground import _resolve_model, load_checkpoint
    from bridge_stg.evaluation.packing import pack_references
    from bridge_stg.processing.collator import BridgeSTGDataCollator, _renamed
    from bridge_stg.processing.schema import COLUMNS, validate_row
    from bridge_stg.training.predict import choose_protocol, predict_grounding

    model_dir, _ = _resolve_model(args.model)
    for i, row in enumerate(rows):  # cheap checks of every row before the first model call
        validate_row({k: v for k, v in row.items() if k in COLUMNS}, source=where, record=i)
    packed = pack_references(rows, source=where)  # and no query id twice
    protocol = args.protocol or choose_protocol(rows)
    if args.overwrite:
        done: dict[str, dict[str, Any]] = {}
        if partial.exists():
            logger.warning(f"{PROG}: --overwrite: discarding {partial} of an earlier run")
            partial.unlink()
    else:
        done = load_done_rows([p for p in (out, partial) if p.exists()], rows, where, protocol, packed)
    todo = [r for r in rows if str(r["query_id"]) not in done]
    if not todo and not partial.exists():  # every query is in OUT already
        return {"rows": len(rows), "new": 0, "kept": len(done), "split": split, "protocol": protocol, "out": str(out)}
    if done:
        logger.warning(f"{PROG}: continuing: {len(done)} of {len(rows)} queries are already in "
                       f"{' / '.join(str(p) for p in (out, partial) if p.exists())}")

    new: list[dict[str, Any]] = []
    if todo:
        from tqdm.auto import tqdm

        model, processor = load_checkpoint(model_dir, device=args.device, dtype=args.dtype)
        collator = BridgeSTGDataCollator(processor, args.video_root or args.dataset, training=False,
                                         sample_fps=args.sample_fps, max_frames=args.max_frames)
        bar = tqdm(total=len(rows), initial=len(done), desc="predict", unit="query", disable=not args.progress)
        try:
            with open(partial, "a", encoding="utf-8") as fh:
                for s in range(0, len(todo), args.batch_size):
                    chunk = todo[s: s + args.batch_size]
                    found = predict_grounding(model, collator, chunk, batch_size=len(chunk), protocol=protocol)
                    fh.write("".join(json.dumps(r) + "\n" for r in found))
                    fh.flush()
                    new.extend(found)
                    bar.update(len(chunk))
        except BridgeSTGError as err:
            raise _renamed(err, f"{err} ({len(done) + len(new)} of {len(rows)} queries are saved in {partial}; fix the "
                                "input and run the same command again to continue)") from err
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted: {len(done) + len(new)} of {len(rows)} queries are saved in {partial}; run the "
                  "same command again to continue", file=sys.stderr)
            raise
        finally:
            bar.close()
            if partial.exists() and partial.stat().st_size == 0:  # nothing to continue from
                partial.unlink()
    found_by_id = {**done, **{r["query_id"]: r for r in new}}
    write_text_atomic(out, "".join(json.dumps(found_by_id[str(r["query_id"])]) + "\n" for r in rows))
    if partial.exists():
        partial.unlink()
    return {"rows": len(rows), "new": len(new), "kept": len(done), "split": split, "protocol": protocol, "out": str(out)}


def _run(argv: list[str]) -> int:
    (args,) = HfArgumentParser(PredictArguments, prog=PROG, description=(
        "Ground every query of a dataset split with a Bridge-STG checkpoint and write the prediction rows that "
        "bridge-stg evaluate scores; a rerun continues after the queries already written.")).parse_args_into_dataclasses(
        args=argv)
    summary = predict_dataset(args)
    if summary["new"] == 0 and summary["kept"] == summary["rows"]:
        print(f"{args.out}: already holds the predictions of all {summary['rows']} queries; nothing to do")
    else:
        print(f"wrote {args.out}: {summary['rows']} predictions ({summary['new']} new, {summary['kept']} kept), "
              f"{args.dataset} split {summary['split']!r}, boxes for the {summary['protocol']} protocol")
    print(f"score them: bridge-stg evaluate --references {args.dataset} --split {summary['split']} "
          f"--predictions {args.out} --protocol {summary['protocol']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``bridge-stg predict``; returns the exit code (2 on bad input, 130 interrupted)."""
    return run_command(PROG, _run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
