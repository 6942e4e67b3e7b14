"""What a user types -> Source."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.errors import NotFoundError, UsageError
from inspector.source import SourceKind, parse_source


@pytest.mark.parametrize(
    "text,revision,expected",
    [
        ("Qwen/Qwen1.5-110B", None, ("Qwen/Qwen1.5-110B", None, None)),
        ("gpt2", None, ("gpt2", None, None)),
        ("gpt2", "refs/pr/1", ("gpt2", "refs/pr/1", None)),
        ("https://huggingface.co/Qwen/Qwen1.5-110B", None, ("Qwen/Qwen1.5-110B", None, None)),
        ("https://huggingface.co/Qwen/Qwen1.5-110B/", None, ("Qwen/Qwen1.5-110B", None, None)),
        ("https://huggingface.co/org/name/tree/v1.0", None, ("org/name", "v1.0", None)),
        ("https://huggingface.co/org/name/tree/refs%2Fpr%2F12", None, ("org/name", "refs/pr/12", None)),
        ("https://huggingface.co/org/name/tree/refs/pr/12", None, ("org/name", "refs/pr/12", None)),
        (
            "https://huggingface.co/org/name/blob/main/model-00001-of-00002.safetensors",
            None,
            ("org/name", "main", "model-00001-of-00002.safetensors"),
        ),
        (
            "https://huggingface.co/org/name/resolve/abc123/sub/model.safetensors",
            None,
            ("org/name", "abc123", "sub/model.safetensors"),
        ),
        ("https://huggingface.co/gpt2/tree/main", None, ("gpt2", "main", None)),
        ("https://hf-mirror.com/org/name/tree/dev", "dev", ("org/name", "dev", None)),
    ],
)
def test_hub_ids_and_urls(text: str, revision: str | None, expected: tuple) -> None:
    s = parse_source(text, revision)
    assert s.kind is SourceKind.HUB
    assert (s.repo_id, s.revision, s.filename) == expected


@pytest.mark.parametrize(
    "text,revision,message",
    [
        ("bad repo!!", None, "not a path on disk nor a valid repo id"),
        ("org/na..me", None, "valid repo id"),
        ("org/name/tree/main", None, "no such file"),  # looks like a path, and none exists
        ("./missing-dir", None, "no such file"),
        ("missing.safetensors", None, "no such file"),
        ("https://huggingface.co/datasets/org/name", None, "not datasets"),
        ("https://huggingface.co/org/name/tree/main", "dev", "contradicts"),
        ("https://huggingface.co/org/name/blob/main/README.md", None, "only a .safetensors"),
        ("https://huggingface.co/org/name/blob/main", None, "names a file"),
        ("https://huggingface.co/org/name/commits/main", None, "expected"),
        ("", None, "empty"),
    ],
)
def test_bad_arguments(text: str, revision: str | None, message: str) -> None:
    with pytest.raises((UsageError, NotFoundError), match=message):
        parse_source(text, revision)


def test_missing_path_is_not_found_not_usage() -> None:
    with pytest.raises(NotFoundError):
        parse_source("./models/llama")


def test_existing_path_wins_over_repo_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gpt2").mkdir()
    monkeypatch.chdir(tmp_path)
    assert parse_source("gpt2").kind is SourceKind.LOCAL_DIR
    assert parse_source("gpt3").kind is SourceKind.HUB


def test_local_kinds(tmp_path: Path) -> None:
    (tmp_path / "m.safetensors").write_bytes(b"")
    (tmp_path / "snap.json").write_text("{}")
    (tmp_path / "weights.gguf").write_bytes(b"")
    (tmp_path / "weights.onnx").write_bytes(b"")
    assert parse_source(str(tmp_path)).kind is SourceKind.LOCAL_DIR
    assert parse_source(str(tmp_path / "m.safetensors")).kind is SourceKind.LOCAL_FILE
    assert parse_source(str(tmp_path / "snap.json")).kind is SourceKind.SNAPSHOT
    assert parse_source(str(tmp_path / "weights.gguf")).kind is SourceKind.LOCAL_FILE
    with pytest.raises(UsageError, match="not a .safetensors or .gguf file"):
        parse_source(str(tmp_path / "weights.onnx"))
    with pytest.raises(UsageError, match="--revision applies to Hub repos"):
        parse_source(str(tmp_path), "main")


def test_hf_cache_snapshot_folder_knows_its_repo_and_sha(tmp_path: Path) -> None:
    sha = "a" * 40
    folder = tmp_path / "hub" / "models--meta-llama--Llama-2-7b-hf" / "snapshots" / sha
    folder.mkdir(parents=True)
    s = parse_source(str(folder))
    assert (s.kind, s.repo_id, s.revision) == (SourceKind.LOCAL_DIR, "meta-llama/Llama-2-7b-hf", sha)
