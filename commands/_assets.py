"""Files shipped with the package: the demo checkpoint and the model card templates.

Both are package data, so they are found the same way in a source checkout, an editable install and a
wheel (``importlib.resources``); a missing file raises a clear error instead of falling back to anything.
"""

from __future__ import annotations

import importlib.resources
import os

from bridge_stg.errors_bridge_stg import BridgeSTGError

DEMO_CHECKPOINT_DIR = "demo_checkpoint"
MODEL_CARD_TEMPLATES = ("template", "demo_checkpoint")


class MissingAssetError(BridgeSTGError, FileNotFoundError):
    """A file that should ship with the package (demo checkpoint, card template) is not there."""


def demo_checkpoint_path() -> str:
    """Folder of the tiny demo checkpoint shipped in ``bridge_stg/demo_checkpoint/``.

    The checkpoint is trained on synthetic shapes only (see its README.md); it is what
    ``bridge-stg ground`` uses without ``--model``.

    Raises:
        MissingAssetError: the folder or its ``config.json`` / weights are missing (a package built without it).
    """
    path = os.fspath(importlib.resources.files("bridge_stg").joinpath(DEMO_CHECKPOINT_DIR))
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise MissingAssetError(
            f"the demo checkpoint is not installed ({path} has no config.json); pass --model DIR with a "
            "Bridge-STG checkpoint folder, or reinstall bridge-stg with its package data"
        )
    if not any(name.endswith(".safetensors") for name in os.listdir(path)):
        raise MissingAssetError(f"the demo checkpoint at {path} has no .safetensors weights; reinstall bridge-stg")
    return path


def model_card_template(name: str = "template") -> str:
    """Text of a model card template of ``model_cards/`` (package data ``bridge_stg.model_cards``).

    Args:
        name: ``"template"`` (any checkpoint) or ``"demo_checkpoint"`` (the tiny synthetic-data demo).
    """
    if name not in MODEL_CARD_TEMPLATES:
        raise ValueError(f"model card template: expected one of {MODEL_CARD_TEMPLATES}, got {name!r}")
    res = importlib.resources.files("bridge_stg.model_cards").joinpath(f"{name}.md")
    if not res.is_file():
        raise MissingAssetError(f"model card template {name}.md is missing from bridge_stg.model_cards; reinstall bridge-stg")
    return res.read_text(encoding="utf-8")


__all__ = ["MissingAssetError", "demo_checkpoint_path", "model_card_template"]
