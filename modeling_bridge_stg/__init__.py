"""bridge-stg: Bridge-STG spatio-temporal video grounding, Hugging Face-native.

Importing the package registers ``bridge_stg`` with ``AutoConfig`` / ``AutoModel`` (and, once they
exist, ``AutoProcessor`` and the ``video-grounding`` pipeline).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .configuration_bridge_stg import BridgeSTGConfig
from .errors_bridge_stg import (
    AnnotationError,
    BridgeSTGError,
    FrameSamplingError,
    InvalidQueryError,
    PredictionError,
    UnsafePathError,
    VideoDecodeError,
)

__all__ = [
    "__version__",
    "BridgeSTGConfig",
    "BridgeSTGError",
    "VideoDecodeError",
    "FrameSamplingError",
    "InvalidQueryError",
    "AnnotationError",
    "UnsafePathError",
    "PredictionError",
]
