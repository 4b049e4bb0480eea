"""Loading an exported folder: every way it can be broken gives one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rankrm.manifest import ManifestError, load_manifest


@pytest.fixture
def exported(model_dir: Path) -> Path:
    return model_dir


@pytest.fixture
def copy(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "model"))


def test_a_good_folder_loads(exported: Path) -> None:
    manifest = load_manifest(exported)
    assert manifest.format_version == 1
    assert manifest.encoding.max_length == 128
    assert set(manifest.files) == {"model.onnx", "tokenizer.json"}


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="model folder not found"):
        load_manifest(tmp_path / "nope")


def test_folder_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json: not found"):
        load_manifest(tmp_path)


def test_corrupt_model_file(copy: Path) -> None:
    with (copy / "model.onnx").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(ManifestError, match=r"model\.onnx: sha256 does not match"):
        load_manifest(copy)
    load_manifest(copy, verify=False)  # an operator may skip the check on purpose


def test_missing_tokenizer(copy: Path) -> None:
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ManifestError, match=r"tokenizer\.json: missing"):
        load_manifest(copy)


def test_manifest_not_json(copy: Path) -> None:
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(copy)


def test_unknown_version(copy: Path) -> None:
    data = json.loads((copy / "manifest.json").read_text())
    data["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="format_version 99 is not supported"):
        load_manifest(copy)


def test_unknown_field(copy: Path) -> None:
    data = json.loads((copy / "manifest.json").read_text())
    data["surprise"] = 1
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="unknown fields"):
        load_manifest(copy)
