"""Layers and packaging: the layers install under the castfinder namespace (no top-level `stream`,
`models` or `index` that could collide with other packages), data flows one way (core <- stream,
models, index <- the app), and no lower layer imports the app."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

LAYERS = {"core": "castfinder.core", "stream": "castfinder.stream", "models": "castfinder.models",
          "index": "castfinder.index"}
BELOW = {"castfinder.core": set(),
         "castfinder.stream": {"castfinder.core", "castfinder.models", "castfinder.index"},
         "castfinder.models": {"castfinder.core"},
         "castfinder.index": {"castfinder.core", "castfinder.models", "castfinder.stream"}}


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_no_layer_imports_the_app_or_a_layer_above():
    bad = []
    for folder, package in LAYERS.items():
        allowed = BELOW[package] | {package}
        for path in sorted((ROOT / folder).rglob("*.py")):
            for mod in imported_modules(path):
                if mod.split(".")[0] in ("stream", "models", "index", "core"):
                    bad.append(f"{path.relative_to(ROOT)}: imports '{mod}' (not under castfinder.)")
                elif mod == "castfinder" or mod.startswith("castfinder."):
                    top = ".".join(mod.split(".")[:2])
                    if top not in allowed:
                        bad.append(f"{path.relative_to(ROOT)}: imports '{mod}'")
    assert not bad, "\n".join(bad)


def test_installed_names_are_namespaced(tmp_path):
    code = ("import importlib.util as u, castfinder.stream.pipeline, castfinder.index.search, castfinder.models.photo;"
            "print([n for n in ('stream', 'models', 'index', 'core') if u.find_spec(n) is not None])")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout
