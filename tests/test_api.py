"""`fastscan.scan()` and the typed report model (schema fastscan.report/1).

Fixtures are sparse safetensors files from the real layouts in ../shared/data/layouts (named per test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fastscan
from fastscan import _core, synth
from fastscan.model import FileReport, Finding, Report, Summary, severity_at_least


@pytest.fixture
def lib(tmp_path):
    """sd15-full-ema (junk.ema), vae-sd (clean), embedding-sd15 cut short (file.truncated)."""
    synth.write_layout(tmp_path / "a-full.safetensors", "sd15-full-ema")
    synth.write_layout(tmp_path / "b-vae.safetensors", "vae-sd")
    p = synth.write_layout(tmp_path / "c-cut.safetensors", "embedding-sd15")
    os.truncate(p, p.stat().st_size - 100)
    return tmp_path


def test_scan_returns_a_typed_report(lib):
    r = fastscan.scan(lib, hash="none")
    assert isinstance(r, fastscan.Report)
    assert [os.path.basename(f.path) for f in r.files] == [
        "a-full.safetensors",
        "b-vae.safetensors",
        "c-cut.safetensors",
    ]
    full, vae, cut = r.files
    assert (full.kind, full.arch, vae.kind, cut.format) == ("checkpoint", "sd1", "vae", "safetensors")
    assert full.checks() == ["junk.ema"] and vae.checks() == [] and cut.checks() == ["file.truncated"]
    assert isinstance(full.findings[0], Finding) and full.findings[0].severity == "warning"
    assert full.components["ema"].tensors == 686
    assert full.components["vae"].dtypes == {"F32": full.components["vae"].bytes}
    assert r.summary.files == 3 and r.summary.findings == {"info": 0, "warning": 1, "error": 1, "critical": 0}
    assert r.summary.wasted_bytes == {"ema": full.wasted_bytes["ema"]}
    assert r.summary.by_check == {"junk.ema": 1, "file.truncated": 1}
    assert r.worst() == "error"


def test_report_to_json_is_the_schema(lib):
    r = fastscan.scan([lib], hash="none")
    d = json.loads(r.to_json())
    assert d["schema"] == "fastscan.report/1"
    assert d["tool"] == {"name": "fastscan", "version": fastscan.__version__}
    assert d["roots"] == [str(lib)] and d["duplicates"] == []
    assert d["summary"]["by_kind"] == {"checkpoint": 1, "embedding": 1, "vae": 1}
    assert d == r.to_dict()
    # compact output is encoded file by file, to the same text
    want = json.dumps(r.to_dict(), ensure_ascii=False, separators=(",", ":"))
    assert r.to_json(indent=None) == want


def test_compact_json_is_written_in_pieces_of_the_same_text(lib, monkeypatch):
    """An unbuffered stream (PYTHONUNBUFFERED) gets one write per gathered piece, not per fragment."""
    r = fastscan.scan([lib], hash="none")
    want = json.dumps(r.to_dict(), ensure_ascii=False, separators=(",", ":"))

    class Writes(list):
        def write(self, text: str) -> None:
            self.append(text)

    whole = Writes()
    r.write_json(whole, indent=None)
    assert "".join(whole) == want and len(whole) == 1  # a small report: one write
    monkeypatch.setattr(fastscan.model, "WRITE_PIECE", 200)
    pieces = Writes()
    r.write_json(pieces, indent=None)
    assert "".join(pieces) == want
    assert 1 < len(pieces) <= len(want) // 200 + 1


def test_file_report_round_trips_the_core_dict_losslessly(lib):
    d = _core.scan_file(str(lib / "a-full.safetensors"), hash="none")
    assert FileReport.from_dict(d).to_dict() == d
    d2 = {**d, "future_field": {"x": 1}, "hashes": {**d["hashes"], "sha512": "ab"}}
    assert FileReport.from_dict(d2).to_dict() == d2


def test_progress_callback_sees_every_file(lib):
    seen = []
    r = fastscan.scan(lib, hash="none", progress=seen.append)
    assert [p.files_done for p in seen] == [1, 2, 3]
    # totals grow as the walk finds files; by the last file every file has been found
    assert seen[-1].files_total == 3
    total = sum(f.stat().st_size for f in lib.iterdir())
    assert seen[-1].bytes_total == total
    assert seen[-1].bytes_done == total
    assert sorted(p.file.path for p in seen) == [f.path for f in r.files]


def test_missing_root_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        fastscan.scan(tmp_path / "nope")


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="hash"):
        fastscan.scan(tmp_path, hash="md5")
    with pytest.raises(ValueError, match="jobs"):
        fastscan.scan(tmp_path, jobs=-2)
    with pytest.raises(ValueError):
        fastscan.scan([])


def test_empty_directory_gives_an_empty_report(tmp_path):
    r = fastscan.scan(tmp_path)
    assert r.files == [] and r.summary.files == 0 and r.worst() is None and not r.fails("info")


def test_scan_one(lib):
    f = fastscan.scan_one(lib / "b-vae.safetensors", hash="none")
    assert (f.kind, f.tensors, f.error) == ("vae", 248, None)
    with pytest.raises(FileNotFoundError):
        fastscan.scan_one(lib / "nope.safetensors")


def test_severity_thresholds():
    assert severity_at_least("error", "error") and severity_at_least("critical", "warning")
    assert not severity_at_least("warning", "error") and not severity_at_least("critical", "never")


def test_fails_counts_unreadable_files_as_errors():
    bad = FileReport.failed("x", "io", "x: permission denied")
    r = Report(["x"], "t", 0.0, [bad], Summary.of([bad]), "0")
    assert r.worst() == "error" and r.fails("error") and not r.fails("critical")
    assert r.summary.errors == 1 and r.to_dict()["files"][0]["error"] == {
        "kind": "io",
        "message": "x: permission denied",
    }


def test_import_is_lazy():
    code = (
        "import sys, fastscan; assert 'fastscan.api' not in sys.modules; "
        "fastscan.scan; assert 'fastscan.api' in sys.modules; "
        "assert not any(m.split('.')[0] in ('rich', 'numpy') for m in sys.modules); "
        "print(fastscan.__version__)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == _core.__version__


def test_unknown_attribute():
    with pytest.raises(AttributeError):
        fastscan.no_such_thing  # noqa: B018
