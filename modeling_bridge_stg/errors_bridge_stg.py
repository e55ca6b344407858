"""Exception types of bridge-stg. All derive from ``ValueError`` so callers that catch bad input keep working.

Self-contained remote code (standard library only). Messages always name the offending file, row or
field, so a user can fix the input without reading a traceback.
"""

from __future__ import annotations


class BridgeSTGError(ValueError):
    """Base class of every error bridge-stg raises on bad input."""


class VideoDecodeError(BridgeSTGError):
    """A video cannot be opened or decoded (missing, not a video, corrupt, no video track, no frames...)."""


class FrameSamplingError(BridgeSTGError):
    """Invalid frame request: fps <= 0, frame ids outside the video, an empty segment..."""


class InvalidQueryError(BridgeSTGError):
    """An empty / whitespace-only query, or a prompt longer than the model accepts."""


class AnnotationError(BridgeSTGError):
    """Malformed annotation input: names the file, the record and the field."""


class UnsafePathError(AnnotationError):
    """A path in an annotation row resolves outside the data root."""


class PredictionError(BridgeSTGError):
    """Malformed predictions given to the evaluator (unknown / duplicate ids, NaN boxes, inverted spans)."""


class MissingAssetError(BridgeSTGError, FileNotFoundError):
    """A file that ships with the package (the demo checkpoint, a model card template) is not installed."""


class MissingDependencyError(BridgeSTGError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it
    (e.g. ``pip install "bridge-stg[train]"``)."""


class OutputExistsError(BridgeSTGError, FileExistsError):
    """An output would replace a file or a non-empty folder that the command did not write (pass
    ``--overwrite``), or would be written onto one of the command's own inputs (never allowed)."""


__all__ = [
    "BridgeSTGError",
    "VideoDecodeError",
    "FrameSamplingError",
    "InvalidQueryError",
    "AnnotationError",
    "UnsafePathError",
    "PredictionError",
    "MissingAssetError",
    "MissingDependencyError",
    "OutputExistsError",
]
