"""Shared fixtures: a clean environment for every test, and helpers to write real files."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = ROOT / "fixtures" / "snapshots"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No developer setting leaks into a test: HF_*, HFMEM_*, proxies and CA bundles cleared, caches and the token file
    under tmp_path (so a developer's own `hf auth login` is never read)."""
    for name in list(os.environ):
        if (name.startswith(("HF_", "HFMEM_", "HUGGING_FACE_")) or name.lower().endswith("_proxy")
                or name in ("NO_COLOR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HFMEM_CACHE_DIR", str(tmp_path / "hfmem_cache"))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    import huggingface_hub.constants as hf_constants

    # huggingface_hub reads these at import time; point them at tmp_path too.
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"), raising=False)
    monkeypatch.setattr(
        hf_constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"), raising=False
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False, raising=False)
    yield
    _release_process_wide_connections()


def _release_process_wide_connections() -> None:
    """Close what one test's reads left open for the rest of the process: the sessions kept per cache
    folder (their SQLite files) and the shared adapters' pools (their sockets). A CLI run is one
    process; the suite is one process for 500 tests, whose leftovers reached 930 open descriptors
    (and the fake proxy's select() failed past 1024)."""
    cache, connections = sys.modules.get("inspector.cache"), sys.modules.get("inspector.connections")
    sessions: list = []
    adapters: list = []
    if cache is not None:
        with cache._BUILD_LOCK:
            sessions = [s for pair in cache._SESSIONS.values() for s in pair]
            cache._SESSIONS.clear()
    if connections is not None:
        with connections._ADAPTER_LOCK:
            adapters = list(connections._ADAPTERS.values())
            connections._ADAPTERS.clear()
    for closeable in (*sessions, *adapters):
        try:
            closeable.close()
        except Exception:  # noqa: BLE001 - a session whose database is already gone
            pass


def snapshot_path(repo_id: str) -> Path:
    plain = SNAPSHOTS / (repo_id.replace("/", "--") + ".json")
    return plain if plain.exists() else plain.with_name(plain.name + ".gz")


def write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


@pytest.fixture(scope="session")
def fake_hub_server():
    from fakehub import FakeHub, repo_from_snapshot

    hub = FakeHub()
    for path in sorted(SNAPSHOTS.glob("*.json*")):
        repo_id = path.name.split(".json")[0].replace("--", "/", 1)
        # Meta's Llama repos are gated on the real Hub; so they are here.
        hub.add(repo_from_snapshot(path, gated=repo_id.startswith("meta-llama/")))
    yield hub
    hub.close()


@pytest.fixture
def fake_hub(fake_hub_server, monkeypatch: pytest.MonkeyPatch):
    """The fake Hub, its log emptied and its knobs reset, reached only through HF_ENDPOINT."""
    fake_hub_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", fake_hub_server.endpoint)
    yield fake_hub_server
    fake_hub_server.reset()


@pytest.fixture(scope="session")
def gguf_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The header-only GGUF fixtures of fixtures/gguf/tables/, written once per session by
    fixtures/gguf/make_gguf.py with the `gguf` package: {table name: its file(s)}."""
    import sys

    sys.path.insert(0, str(ROOT / "fixtures" / "gguf"))
    try:
        import make_gguf
    finally:
        sys.path.pop(0)
    folder = tmp_path_factory.mktemp("gguf")
    return {name: [Path(p) for p in paths] for name, paths in make_gguf.write_all(str(folder)).items()}
