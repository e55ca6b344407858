"""Hugging Face Space folders: a checkpoint folder plus ``app.py``, ``requirements.txt`` and the Space's ``README.md``.

``bridge-stg app --export DIR [--model CKPT]`` (:func:`write_space`) writes, into ``DIR``:

* the checkpoint: every file at the top of the ``--model`` folder (the demo checkpoint without ``--model``), made
  self-contained (the remote code, ``auto_map`` and ``custom_pipelines``, :func:`bridge_stg.model_cards.hub.write_remote_code`),
  so the folder still loads with ``pipeline("video-grounding", model=DIR, trust_remote_code=True)``;
* ``app.py``: the page of ``bridge-stg app`` (:class:`bridge_stg.evaluation.app.GroundingPage`) on the checkpoint of its
  own folder. bridge-stg is not on PyPI, and a Space installs ``requirements.txt`` before it sees the rest of the
  folder, so ``app.py`` carries the package's source (its ``.py`` files and templates, a deterministic zip archive in
  base64, about 250 KB) and unpacks it into a temporary folder at start: the Space runs the same page, the same
  checks and the same pipeline classes as ``bridge-stg app``;
* ``requirements.txt``: the package's dependencies and the Gradio of the ``[app]`` extra;
* ``README.md``: the Space's settings (``sdk: gradio``, ``sdk_version``, ``app_file: app.py``) above the checkpoint's
  model card.

The folder is then a Space as it is: ``huggingface_hub.upload_folder(repo_id=..., repo_type="space", folder_path=DIR)``
(create the Space first with ``space_sdk="gradio"``), or, locally, ``pip install -r requirements.txt && python app.py``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import bridge_stg
from bridge_stg.evaluation.app import GRADIO_VERSION

#: the packages of the distribution (setup.py ``packages``), carried by ``app.py``
BUNDLED_PACKAGES = (
    "bridge_stg",
    "bridge_stg.processing",
    "bridge_stg.training",
    "bridge_stg.evaluation",
    "bridge_stg.evaluation.stvg",
    "bridge_stg.commands",
    "bridge_stg.model_cards",
)
#: file kinds carried (code and the package data the code reads: card templates, READMEs)
BUNDLED_SUFFIXES = (".py", ".md")
#: the first line of every ``app.py`` this module writes
APP_MARKER = "# A Hugging Face Space written by `bridge-stg app --export`"
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n?", re.S)

APP_TEMPLATE = '''{marker} (bridge-stg {version}).
"""Spatio-temporal video grounding in the browser with the Bridge-STG checkpoint of this folder.

This folder is a Hugging Face Space as it is: the checkpoint (weights, configs, tokenizer, remote code), this file,
requirements.txt and README.md (the Space's settings). Locally: ``pip install -r requirements.txt && python app.py``
(host and port: GRADIO_SERVER_NAME, GRADIO_SERVER_PORT; device: BRIDGE_STG_DEVICE, default cpu).

The page is bridge-stg's own (``bridge_stg.evaluation.app.GroundingPage``, the page of ``bridge-stg app``). The
package's source is carried at the end of this file (a zip archive in base64, checked by its SHA-256) and unpacked
into a temporary folder at start, so the Space needs nothing that is not on PyPI.
"""

import base64
import hashlib
import io
import os
import shutil
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
#: the checkpoint is the demo checkpoint shipped with bridge-stg (trained on synthetic shapes only): the page says so
DEMO_CHECKPOINT = {is_demo}
BUNDLE_SHA256 = "{sha256}"


def unpack_bundle():
    """Unpack the bundled bridge-stg source (once per version) and return its folder."""
    data = base64.b64decode("".join(BUNDLE))
    if hashlib.sha256(data).hexdigest() != BUNDLE_SHA256:
        raise RuntimeError("app.py: the bundled bridge-stg source is damaged (SHA-256 mismatch); export the Space again")
    target = os.path.join(tempfile.gettempdir(), "bridge-stg-" + BUNDLE_SHA256[:16])
    if not os.path.isfile(os.path.join(target, "bridge_stg", "__init__.py")):
        tmp = tempfile.mkdtemp(prefix=".bridge-stg-", dir=tempfile.gettempdir())
        zipfile.ZipFile(io.BytesIO(data)).extractall(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # unpacked by another process meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def build_page():
    """The page on this folder's checkpoint (the bundled bridge-stg comes first on sys.path)."""
    sys.path.insert(0, unpack_bundle())
    from bridge_stg.evaluation.app import GroundingPage

    return GroundingPage(HERE, device=os.environ.get("BRIDGE_STG_DEVICE", "cpu"), is_demo=DEMO_CHECKPOINT)


BUNDLE = (
{bundle}
)

if __name__ == "__main__":
    build_page().launch(host=None, port=None)  # Gradio reads GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
'''


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name}: package not found (is bridge-stg installed?)")
    return Path(list(spec.submodule_search_locations)[0])


def bundle_files() -> dict[str, Path]:
    """The files ``app.py`` carries: archive name (``bridge_stg/processing/synthetic.py``) -> file."""
    files: dict[str, Path] = {}
    for package in BUNDLED_PACKAGES:
        folder = _package_dir(package)
        prefix = package.replace(".", "/")
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix in BUNDLED_SUFFIXES:
                files[f"{prefix}/{path.name}"] = path
    if "bridge_stg/__init__.py" not in files:
        raise RuntimeError("the bridge_stg package has no __init__.py")
    return files


def bundle_bytes() -> bytes:
    """A deterministic zip archive of :func:`bundle_files` (sorted names, fixed dates): the same source, the same
    bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, path in sorted(bundle_files().items()):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes(), compresslevel=9)
    return buf.getvalue()


def app_source(is_demo: bool) -> str:
    """The text of a Space's ``app.py``."""
    data = bundle_bytes()
    encoded = base64.b64encode(data).decode("ascii")
    lines = "\n".join(f'    "{encoded[i:i + 100]}"' for i in range(0, len(encoded), 100))
    return APP_TEMPLATE.format(marker=APP_MARKER, version=bridge_stg.__version__, is_demo=bool(is_demo),
                               sha256=hashlib.sha256(data).hexdigest(), bundle=lines)


def requirements() -> list[str]:
    """``requirements.txt`` lines: the installed distribution's dependencies (without extras) and ``gradio``."""
    try:
        reqs = importlib.metadata.requires("bridge-stg") or []
    except importlib.metadata.PackageNotFoundError as err:
        raise RuntimeError("bridge-stg is not installed (its dependencies are read from its metadata)") from err
    lines = [r.strip() for r in reqs if ";" not in r]
    lines = [r for r in lines if not r.lower().startswith("gradio")]
    return lines + [f"gradio=={GRADIO_VERSION}"]


def space_readme(card: str | None, title: str, is_demo: bool) -> str:
    """The Space's ``README.md``: its settings (front matter) above the model card's text (``card``, its own front
    matter dropped)."""
    import yaml

    card_meta: dict[str, Any] = {}
    body = card or ""
    match = _FRONT_MATTER.match(body)
    if match:
        try:
            card_meta = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError:
            card_meta = {}
        body = body[match.end():]
    # the Space's checkpoint carries its code (write_space adds it): a card that says otherwise is corrected
    from bridge_stg.model_cards.hub import REMOTE_CODE_FILES, files_text

    body = body.replace(files_text(()), files_text(REMOTE_CODE_FILES))
    tags = ["bridge-stg", "video-grounding", "spatio-temporal-video-grounding"]
    tags += [t for t in card_meta.get("tags") or [] if isinstance(t, str) and t not in tags and t != "custom_code"]
    meta = {
        "title": title[:60],
        "emoji": "🎯",
        "colorFrom": "red",
        "colorTo": "gray",
        "sdk": "gradio",
        "sdk_version": GRADIO_VERSION,
        "app_file": "app.py",
        "pinned": False,
        "license": card_meta.get("license") or "apache-2.0",
        "short_description": "Spatio-temporal video grounding with Bridge-STG",
        "tags": tags,
    }
    intro = (
        f"# {title}\n\nUpload a video and type a sentence: the model returns when it happens (a span of frames) and "
        "where (one box per frame), drawn on the video. This Space was written by `bridge-stg app --export`: the "
        "folder is the checkpoint, `app.py` (the page of `bridge-stg app`) and `requirements.txt`.\n"
    )
    if is_demo:
        intro += ("\n**The model is bridge-stg's tiny demo checkpoint, trained on synthetic clips of coloured shapes "
                  "only; it knows nothing about real videos.**\n")
    text = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + intro
    if body.strip():
        text += "\n## The model card\n\n" + re.sub(r"^#", "##", body.strip(), flags=re.M) + "\n"
    return text


def write_space(out_dir: str | os.PathLike, model_dir: str | os.PathLike, is_demo: bool = False,
                title: str | None = None) -> list[str]:
    """Write a Space into ``out_dir`` (an empty folder: the command stages it and renames it at the end): the files at
    the top of ``model_dir`` made self-contained, ``app.py``, ``requirements.txt`` and ``README.md``; then check that
    the checkpoint is complete. Returns the names written."""
    from bridge_stg.model_cards.hub import verify_checkpoint_folder, write_remote_code

    out, src = Path(out_dir), Path(model_dir)
    card = (src / "README.md").read_text(encoding="utf-8") if (src / "README.md").is_file() else None
    for path in sorted(src.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name not in SPACE_FILES:
            shutil.copyfile(path, out / path.name)
    write_remote_code(out)
    name = title or ("bridge-stg demo" if is_demo else f"bridge-stg: {src.resolve().name}")
    (out / "README.md").write_text(space_readme(card, name, is_demo), encoding="utf-8")
    (out / "requirements.txt").write_text("\n".join(requirements()) + "\n", encoding="utf-8")
    (out / "app.py").write_text(app_source(is_demo), encoding="utf-8")
    verify_checkpoint_folder(out)
    return sorted(p.name for p in out.iterdir())


__all__ = ["APP_MARKER", "BUNDLED_PACKAGES", "app_source", "bundle_bytes", "bundle_files", "requirements",
           "space_readme", "write_space"]
