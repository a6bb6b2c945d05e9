"""`fastscan export` and the sidecar check (docs/hash-interop.md).

Expected hashes are computed here with hashlib and the blake3 package from the files' bytes; the
files other tools read are checked field by field as those tools read them (Civitai Helper:
`files[].hashes.SHA256`; StabilityMatrix: `Hashes.BLAKE3`; the web UI: `hashes-addnet["lora/<stem>"]`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import blake3
import pytest

from fastscan import _core, synth
from fastscan.api import scan
from test_cli import run_cli


def sha256_of(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def addnet_of(p: Path) -> str:
    b = p.read_bytes()
    (n,) = struct.unpack("<Q", b[:8])
    return hashlib.sha256(b[8 + n :]).hexdigest()


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    """A LoRA, an embedding and a file that is no model, in one folder."""
    synth.write_layout(tmp_path / "style.safetensors", "lora-sd15-kohya")
    synth.write_layout(tmp_path / "emb.safetensors", "embedding-sd15")
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path


def checks_of(report, path: Path) -> list:
    f = next(f for f in report.files if Path(f.path) == path)
    return [x for x in f.findings if x.check in ("hash.mismatch", "sidecar.stale", "sidecar.unreadable")]


def test_civitai_info_written_read_and_never_clobbered(lib: Path) -> None:
    r = run_cli("export", "--format", "civitai-info", "--no-cache", str(lib))
    assert r.returncode == 0, r.stderr
    lora = lib / "style.safetensors"
    info = json.loads((lib / "style.civitai.info").read_text())
    f = info["files"][0]
    assert f["name"] == "style.safetensors"
    sha = sha256_of(lora)
    assert f["hashes"]["SHA256"] == sha.upper()
    assert f["hashes"]["AutoV2"] == sha[:10].upper()
    assert f["hashes"]["BLAKE3"] == blake3.blake3(lora.read_bytes()).hexdigest().upper()
    assert (lib / "emb.civitai.info").is_file()
    assert not (lib / "notes.civitai.info").exists()
    # the scan reads it back: it agrees, and the sidecar itself is no unknown file
    rep = scan([lib], sha256=True)
    assert checks_of(rep, lora) == []
    side = next(x for x in rep.files if x.path.endswith("style.civitai.info"))
    assert side.kind == "sidecar" and side.findings == []

    # a user's own file is kept without --force, byte for byte
    mine = '{"files": [{"hashes": {"SHA256": "%s"}}], "mine": true}' % ("0" * 64)
    (lib / "style.civitai.info").write_text(mine)
    r = run_cli("export", "--format", "civitai-info", str(lib))
    assert r.returncode == 1
    assert "--force" in r.stderr
    assert (lib / "style.civitai.info").read_text() == mine
    # ... and it now disagrees with the file: hash.mismatch, an error, naming what was compared
    rep = scan([lib], sha256=True)
    (m,) = checks_of(rep, lora)
    assert m.severity == "error"
    assert m.details["hash"] == "sha256"
    assert m.details["published"] == "0" * 64
    assert m.details["computed"] == sha
    assert m.details["format"] == "civitai-info"
    # only computed hashes are compared: without --sha256 the SHA-256 cannot disagree
    assert checks_of(scan([lib]), lora) == []

    r = run_cli("export", "--format", "civitai-info", "--force", str(lora))
    assert r.returncode == 0, r.stderr
    assert json.loads((lib / "style.civitai.info").read_text())["files"][0]["hashes"]["SHA256"] == sha.upper()


def test_cm_info_and_stale_sidecar(lib: Path) -> None:
    r = run_cli("export", "--format", "cm-info", "--no-cache", str(lib / "style.safetensors"))
    assert r.returncode == 0, r.stderr
    cm = json.loads((lib / "style.cm-info.json").read_text())
    lora = lib / "style.safetensors"
    assert cm["Hashes"]["BLAKE3"] == blake3.blake3(lora.read_bytes()).hexdigest().upper()
    assert cm["Hashes"]["SHA256"] == sha256_of(lora).upper()
    assert cm["ModelType"] == "LORA"
    assert cm["ModelName"] == "style"
    # a swapped download: BLAKE3 (always computed) disagrees
    cm["Hashes"]["BLAKE3"] = "AB" * 32
    (lib / "style.cm-info.json").write_text(json.dumps(cm))
    (m,) = checks_of(scan([lib], cache=True), lora)
    assert (m.details["hash"], m.details["format"]) == ("blake3", "cm-info")
    # sidecars are read after the scan cache: fixing the sidecar clears the finding on a cached scan
    cm["Hashes"]["BLAKE3"] = blake3.blake3(lora.read_bytes()).hexdigest()
    (lib / "style.cm-info.json").write_text(json.dumps(cm))
    assert checks_of(scan([lib], cache=True), lora) == []
    # the model is gone: the sidecar is stale
    lora.unlink()
    rep = scan([lib])
    side = next(x for x in rep.files if x.path.endswith("style.cm-info.json"))
    assert [f.check for f in side.findings] == ["sidecar.stale"]


def test_a1111_cache_merged(lib: Path, tmp_path: Path) -> None:
    cache = tmp_path / "webui" / "cache.json"
    cache.parent.mkdir()
    lora = lib / "style.safetensors"
    theirs = {
        "hashes": {"checkpoint/other.safetensors": {"mtime": 1.0, "sha256": "11" * 32}},
        "hashes-addnet": {"lora/style": {"mtime": 0.5, "sha256": "22" * 32}},  # older than the file
        "safetensors-metadata": {"x": {"mtime": 1.0, "value": {}}},
    }
    cache.write_text(json.dumps(theirs))
    r = run_cli("export", "--format", "a1111", "--webui-cache", str(cache), str(lib))
    assert r.returncode == 0, r.stderr
    doc = json.loads(cache.read_text())
    assert doc["hashes"] == theirs["hashes"]
    assert doc["safetensors-metadata"] == theirs["safetensors-metadata"]
    entry = doc["hashes-addnet"]["lora/style"]
    assert entry["sha256"] == addnet_of(lora)
    assert entry["mtime"] == pytest.approx(os.path.getmtime(lora))
    assert "emb.safetensors" in r.stdout + r.stderr  # an embedding: said, not written

    # a current entry that disagrees is the user's: kept without --force, and reported as a mismatch
    doc["hashes-addnet"]["lora/style"]["sha256"] = "33" * 32
    cache.write_text(json.dumps(doc))
    r = run_cli("export", "--format", "a1111", "--webui-cache", str(cache), str(lora))
    assert r.returncode == 1
    assert json.loads(cache.read_text())["hashes-addnet"]["lora/style"]["sha256"] == "33" * 32
    r = run_cli("export", "--format", "a1111", "--webui-cache", str(cache), "--force", str(lora))
    assert r.returncode == 0, r.stderr
    assert json.loads(cache.read_text())["hashes-addnet"]["lora/style"]["sha256"] == addnet_of(lora)


def test_web_ui_cache_near_a_model_is_checked(tmp_path: Path) -> None:
    models = tmp_path / "models" / "Lora"
    models.mkdir(parents=True)
    lora = synth.write_layout(models / "style.safetensors", "lora-sd15-kohya")
    entry = {"mtime": os.path.getmtime(lora) + 5, "sha256": "44" * 32}
    (tmp_path / "cache.json").write_text(json.dumps({"hashes-addnet": {"lora/style": entry}}))
    rep = scan([models], sha256=True)
    (m,) = checks_of(rep, lora)
    assert (m.details["format"], m.details["hash"], m.details["title"]) == ("a1111", "addnet", "lora/style")
    assert m.details["computed"] == addnet_of(lora)


def test_export_refusals(lib: Path) -> None:
    r = run_cli("export", "--format", "a1111", str(lib))
    assert r.returncode == 2 and "--webui-cache" in r.stderr
    with pytest.raises(ValueError, match="format"):
        _core.export("nope", [])
