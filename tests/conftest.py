import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CASTFINDER_DATA", ROOT.parent / "shared" / "data"))
DEV = DATA / "dev"
CLIPS = ["friends", "avenger2", "herapheri", "billhyland", "testvideo"]


def clip(name: str) -> Path:
    return DEV / name / "video.mp4"


def truth(name: str) -> dict:
    return json.loads((DEV / name / "truth.json").read_text())


def run_cli(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "castfinder", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, **kw)


@pytest.fixture(scope="session", autouse=True)
def _data_present():
    if not DEV.is_dir():
        pytest.exit(f"evaluation data not found at {DATA} (set CASTFINDER_DATA)", returncode=2)


@pytest.fixture(scope="session")
def ingest_cfg():
    from castfinder.config import load_config
    return load_config("default").ingest


@pytest.fixture(scope="session")
def models(ingest_cfg):
    from stream.pipeline import Models
    return Models(ingest_cfg)


@pytest.fixture(scope="session")
def friends_index(tmp_path_factory, models, ingest_cfg):
    """The friends clip ingested once with the offline defaults."""
    from index.store import IndexStore
    from stream.pipeline import IngestJob

    path = tmp_path_factory.mktemp("friends_index")
    store = IndexStore(path, writable=True)
    result = IngestJob(str(clip("friends")), store, ingest_cfg, models).run()
    store.close()
    return path, result
