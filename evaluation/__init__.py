"""Exact STVG evaluation: a numpy core, an ``evaluate`` metric module and the ``bridge-stg evaluate`` CLI.

>>> from bridge_stg.evaluation import compute_stvg_metrics, METRIC_PATH
>>> result = compute_stvg_metrics(reference_rows, prediction_rows, protocol="tubedetr")  # doctest: +SKIP
>>> import evaluate; metric = evaluate.load(METRIC_PATH)                                # doctest: +SKIP

Definitions and protocols: ``docs/evaluation.md``; row schema: ``docs/schema.md``.
"""

from __future__ import annotations

import os

from .metrics import (
    PROTOCOLS,
    aggregate,
    box_iou,
    compute_stvg_metrics,
    flatten_results,
    pack_predictions,
    pack_references,
    per_query_metrics,
    temporal_iou,
    tubedetr_grid,
    tubedetr_grids,
)

#: filesystem path of the ``evaluate`` metric module: ``evaluate.load(METRIC_PATH)``
METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stvg")

__all__ = [
    "METRIC_PATH", "PROTOCOLS", "compute_stvg_metrics", "flatten_results", "box_iou", "temporal_iou",
    "tubedetr_grid", "tubedetr_grids", "pack_references", "pack_predictions", "per_query_metrics", "aggregate",
]
