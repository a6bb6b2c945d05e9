"""Walking a library: FIFOs, symlink loops, dangling links and unreadable files never hang or stop a scan.

Model fixtures are sparse safetensors files from the real layouts in ../shared/data/layouts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import fastscan
from fastscan import synth


def run_json(*args, timeout: float = 60) -> tuple[int, dict]:
    """`fastscan ARGS --json --hash none` in a subprocess with a timeout: a hang fails the test."""
    r = subprocess.run(
        [sys.executable, "-m", "fastscan", *map(str, args), "--json", "--hash", "none", "--no-cache"],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.fixture
def tree(tmp_path):
    """lib/ with an embedding (embedding-sd15), a FIFO, and sub/loop -> lib (a symlink loop)."""
    lib = tmp_path / "lib"
    (lib / "sub").mkdir(parents=True)
    synth.write_layout(lib / "emb.safetensors", "embedding-sd15")
    os.mkfifo(lib / "fifo.safetensors")
    (lib / "sub" / "loop").symlink_to(lib)
    return lib


def test_fifo_and_symlink_loop_do_not_hang(tree):
    _, rep = run_json(tree)
    assert [os.path.basename(f["path"]) for f in rep["files"]] == ["emb.safetensors"]


def test_symlink_loop_with_follow_links_is_a_per_file_error(tree):
    code, rep = run_json(tree, "--follow-links")
    by_name = {os.path.basename(f["path"]): f for f in rep["files"]}
    assert by_name["emb.safetensors"]["kind"] == "embedding"
    loops = [f for f in rep["files"] if f["error"] and f["error"]["kind"] == "loop"]
    assert loops and "loop" in loops[0]["error"]["message"].lower()
    assert "fifo.safetensors" not in by_name
    assert code == 1  # an unreadable entry is an error for --fail-on


def test_dangling_symlink_with_follow_links_gives_an_error_and_the_scan_goes_on(tmp_path):
    synth.write_layout(tmp_path / "vae.safetensors", "vae-sd")
    (tmp_path / "gone.safetensors").symlink_to(tmp_path / "deleted.safetensors")
    _, rep = run_json(tmp_path, "--follow-links")
    by_name = {os.path.basename(f["path"]): f for f in rep["files"]}
    assert by_name["vae.safetensors"]["kind"] == "vae" and by_name["vae.safetensors"]["error"] is None
    err = by_name["gone.safetensors"]["error"]
    assert err["kind"] == "io" and "gone.safetensors" in err["message"]
    assert rep["summary"]["errors"] == 1
    # Without --follow-links a symlink is not followed at all.
    _, rep = run_json(tmp_path)
    assert [os.path.basename(f["path"]) for f in rep["files"]] == ["vae.safetensors"]


def test_unreadable_file_gives_a_per_file_error(tmp_path):
    synth.write_layout(tmp_path / "ok.safetensors", "embedding-sd15")
    p = synth.write_layout(tmp_path / "secret.safetensors", "embedding-sd15")
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running as root: chmod 000 does not make a file unreadable")
        r = fastscan.scan(tmp_path, hash="none")
        by_name = {os.path.basename(f.path): f for f in r.files}
        assert by_name["ok.safetensors"].kind == "embedding"
        err = by_name["secret.safetensors"].error
        assert err is not None and "secret.safetensors" in err.message
    finally:
        p.chmod(0o644)


def test_file_root_and_directory_root_together(tmp_path):
    a = synth.write_layout(tmp_path / "a.safetensors", "embedding-sd15")
    d = tmp_path / "d"
    d.mkdir()
    synth.write_layout(d / "b.safetensors", "vae-sd")
    r = fastscan.scan([a, d], hash="none")
    assert sorted(os.path.basename(f.path) for f in r.files) == ["a.safetensors", "b.safetensors"]
    assert r.roots == [str(a), str(d)]


def test_non_model_file_is_unknown_without_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model\n")
    r = fastscan.scan(tmp_path, hash="none")
    (f,) = r.files
    assert (f.format, f.kind, f.error, f.findings) == ("unknown", "unknown", None, [])


def test_fifo_given_as_root_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.safetensors")
    _, rep = run_json(tmp_path / "pipe.safetensors")
    assert rep["files"] == []


def test_skipped_symlinks_are_counted_in_summary_and_shown(tmp_path):
    """Links below a root are not followed by default: counted in `summary.skipped_links`, shown in a line."""
    store, lib = tmp_path / "store", tmp_path / "lib"
    store.mkdir()
    lib.mkdir()
    synth.write_layout(store / "emb.safetensors", "embedding-sd15")
    synth.write_layout(lib / "own.safetensors", "embedding-sd15")
    (lib / "linked.safetensors").symlink_to(store / "emb.safetensors")
    (lib / "shared").symlink_to(store)
    _, doc = run_json(lib)
    assert doc["summary"]["skipped_links"] == 2 and doc["summary"]["files"] == 1
    _, doc = run_json(lib, "--follow-links")
    assert doc["summary"]["skipped_links"] == 0 and doc["summary"]["files"] == 3
    # a root given as a link is followed, not counted
    _, doc = run_json(lib / "linked.safetensors")
    assert doc["summary"]["skipped_links"] == 0 and doc["summary"]["files"] == 1
    r = subprocess.run(
        [sys.executable, "-m", "fastscan", str(lib), "--hash", "none", "--no-cache"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert "2 symlinks skipped" in r.stdout, r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "fastscan", str(lib), "--hash", "none", "--no-cache", "--follow-links"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "100"},
    )  # fmt: skip
    assert "skipped" not in r.stdout, r.stdout
