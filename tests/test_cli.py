"""The `fastscan` command line: kinds of every real layout, report schema, output modes, options, exit codes.

Fixtures are sparse safetensors files written from the real layouts in ../shared/data/layouts (each
fixture names its layout).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fastscan import _core, synth

# Every real layout: (kind, arch, components). Shared components (VAEs, CLIP encoders) carry arch
# "unknown": the same file serves several architectures. sd15-ema-extras (what a training checkpoint
# adds: the UNet's EMA copy and schedule buffers) is an SD1 UNet under EMA names.
LAYOUTS = {
    "diffusers-sd15-text-encoder": ("text-encoder", "unknown", {"clip_l", "buffers"}),
    "diffusers-sd15-unet": ("unet", "sd1", {"unet"}),
    "diffusers-sd15-vae": ("vae", "unknown", {"vae"}),
    "embedding-sd15": ("embedding", "sd1", {"embedding"}),
    "embedding-sdxl": ("embedding", "sdxl", {"embedding"}),
    "flux-ae": ("vae", "unknown", {"vae"}),
    "flux1-dev": ("unet", "flux", {"unet"}),
    "lora-sd15-kohya": ("lora", "sd1", {"unet", "text_encoder"}),
    "sd15": ("checkpoint", "sd1", {"unet", "vae", "clip_l", "buffers"}),
    "sd15-ema-extras": ("unet", "sd1", {"ema", "buffers"}),
    "sd15-emaonly-official": ("checkpoint", "sd1", {"unet", "vae", "clip_l", "buffers"}),
    "sd15-full-ema": ("checkpoint", "sd1", {"unet", "vae", "clip_l", "buffers", "ema"}),
    "sd15-inpaint": ("checkpoint", "sd1-inpaint", {"unet", "vae", "clip_l", "buffers"}),
    "sd21": ("checkpoint", "sd2", {"unet", "vae", "open_clip_h"}),
    "sd3-medium": ("checkpoint", "sd3", {"unet", "vae"}),
    "sd3-medium-incl-clips": ("checkpoint", "sd3", {"unet", "vae", "clip_l", "clip_g"}),
    "sd3-medium-incl-clips-t5xxlfp16": ("checkpoint", "sd3", {"unet", "vae", "clip_l", "clip_g", "t5xxl"}),
    "sdxl": ("checkpoint", "sdxl", {"unet", "vae", "clip_l", "clip_g", "buffers"}),
    "sdxl-posids-f16": ("checkpoint", "sdxl", {"unet", "vae", "clip_l", "clip_g", "buffers"}),
    "sdxl-refiner": ("checkpoint", "sdxl-refiner", {"unet", "vae", "clip_g"}),
    "vae-sd": ("vae", "unknown", {"vae"}),
}

# Scans in these tests use their own cache database, never the user's.
_CACHE = tempfile.TemporaryDirectory(prefix="fastscan-test-cache-")
TOP_KEYS = {"schema", "tool", "roots", "started", "elapsed_s", "summary", "files", "duplicates"}
SUMMARY_KEYS = {"files", "bytes", "by_kind", "by_arch", "findings", "wasted_bytes"}
FILE_KEYS = {
    "path", "size", "mtime", "format", "kind", "arch", "tensors", "dtypes", "components", "hashes",
    "metadata", "findings", "error",
}  # fmt: skip


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None, timeout: float = 120):
    """Runs `python -m fastscan ARGS` in a subprocess (stdout and stderr are pipes)."""
    env = {**os.environ, "FASTSCAN_CACHE": os.path.join(_CACHE.name, "scan.sqlite3"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fastscan", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )  # fmt: skip


def scan_json(*args: str, **kw) -> dict:
    """Runs `fastscan ARGS --json` and parses the report."""
    r = run_cli(*args, "--json", **kw)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def layout_lib(tmp_path_factory) -> Path:
    """Every real layout written as a sparse file named after it."""
    d = tmp_path_factory.mktemp("layouts")
    for name in sorted(p.stem for p in synth.layouts_dir().glob("*.json")):
        synth.write_layout(d / f"{name}.safetensors", name)
    return d


@pytest.fixture(scope="module")
def layout_report(layout_lib) -> dict:
    return scan_json(layout_lib, "--hash", "none")


@pytest.fixture
def clean_dir(tmp_path) -> Path:
    """A VAE (vae-sd) and an embedding (embedding-sd15): no findings."""
    d = tmp_path / "clean"
    d.mkdir()
    synth.write_layout(d / "vae.safetensors", "vae-sd")
    synth.write_layout(d / "emb.safetensors", "embedding-sd15")
    return d


@pytest.fixture
def ema_dir(tmp_path) -> Path:
    """A training checkpoint with EMA (sd15-full-ema): a warning (junk.ema), nothing worse."""
    d = tmp_path / "ema"
    d.mkdir()
    synth.write_layout(d / "full.safetensors", "sd15-full-ema")
    return d


@pytest.fixture
def broken_dir(tmp_path) -> Path:
    """An embedding (embedding-sd15) cut short: an error (file.truncated)."""
    d = tmp_path / "broken"
    d.mkdir()
    p = synth.write_layout(d / "cut.safetensors", "embedding-sd15")
    os.truncate(p, p.stat().st_size - 1000)
    return d


def test_layout_table_covers_every_real_layout():
    assert set(LAYOUTS) == {p.stem for p in synth.layouts_dir().glob("*.json")}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_kind_arch_components_of_every_layout(name, layout_report):
    kind, arch, comps = LAYOUTS[name]
    f = next(f for f in layout_report["files"] if Path(f["path"]).stem == name)
    assert (f["format"], f["kind"], f["arch"]) == ("safetensors", kind, arch)
    assert set(f["components"]) == comps
    assert f["tensors"] == len(synth.load_layout(name)["tensors"])
    assert f["error"] is None


def test_json_report_schema(layout_report, layout_lib):
    r = layout_report
    assert TOP_KEYS <= set(r)
    assert r["schema"] == "fastscan.report/1"
    assert r["tool"] == {"name": "fastscan", "version": _core.__version__}
    assert r["roots"] == [str(layout_lib)]
    assert r["started"].endswith("+00:00") and isinstance(r["elapsed_s"], float)
    assert r["duplicates"] == []
    s = r["summary"]
    assert SUMMARY_KEYS <= set(s)
    assert s["files"] == len(r["files"]) == len(LAYOUTS)
    assert s["bytes"] == sum(f["size"] for f in r["files"])
    assert set(s["findings"]) == {"info", "warning", "error", "critical"}
    assert s["by_kind"]["checkpoint"] == sum(1 for k, _, _ in LAYOUTS.values() if k == "checkpoint")
    assert s["by_kind"]["vae"] == 3 and s["by_kind"]["lora"] == 1
    assert s["by_arch"]["sd3"] == 3
    assert s["wasted_bytes"]["ema"] > 0  # sd15-full-ema
    assert [f["path"] for f in r["files"]] == sorted(f["path"] for f in r["files"])
    for f in r["files"]:
        assert FILE_KEYS <= set(f)
        assert set(f["hashes"]) >= {"blake3", "sha256", "autov1", "autov2", "addnet"}
        for c in f["components"].values():
            assert set(c) == {"tensors", "bytes", "dtypes", "blake3"}
        for x in f["findings"]:
            assert set(x) == {"check", "severity", "message", "details"}


def test_default_command_is_scan(clean_dir):
    a = scan_json(clean_dir, "--hash", "none")
    b = scan_json("scan", clean_dir, "--hash", "none")
    c = json.loads(run_cli("--json", "--hash", "none", clean_dir).stdout)
    for r in (a, b, c):
        assert [(f["path"], f["kind"]) for f in r["files"]] == [(f["path"], f["kind"]) for f in a["files"]]


def test_jsonl_one_line_per_file_then_summary(layout_lib):
    r = run_cli(layout_lib, "--jsonl", "--hash", "none")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == len(LAYOUTS) + 1
    assert all("path" in x and "schema" not in x for x in lines[:-1])
    last = lines[-1]
    assert last["schema"] == "fastscan.report/1" and "files" not in last
    assert last["summary"]["files"] == len(LAYOUTS)


def test_json_and_jsonl_exclude_each_other(clean_dir):
    r = run_cli(clean_dir, "--json", "--jsonl")
    assert r.returncode == 2 and "exclude" in r.stderr


def test_table_output_on_a_pipe(ema_dir):
    r = run_cli(ema_dir, "--hash", "none")
    assert r.returncode == 0  # a warning is below the default --fail-on error
    assert "junk.ema" in r.stdout and "full.safetensors" in r.stdout
    assert r.stderr == ""  # no progress bar on a pipe


def test_exit_codes_follow_fail_on(clean_dir, ema_dir, broken_dir):
    assert run_cli(clean_dir, "--hash", "none").returncode == 0
    assert run_cli(broken_dir, "--hash", "none").returncode == 1
    assert run_cli(broken_dir, "--hash", "none", "--fail-on", "never").returncode == 0
    assert run_cli(broken_dir, "--hash", "none", "--fail-on", "critical").returncode == 0
    assert run_cli(ema_dir, "--hash", "none", "--fail-on", "warning").returncode == 1
    assert run_cli(ema_dir, "--hash", "none", "--fail-on", "error").returncode == 0
    assert run_cli(clean_dir, "--hash", "none", "--fail-on", "warning").returncode == 0


def test_exit_2_for_missing_root_and_bad_usage(tmp_path, clean_dir):
    r = run_cli(tmp_path / "nope", clean_dir)
    assert r.returncode == 2 and "nope" in r.stderr and r.stdout == ""
    assert run_cli(clean_dir, "--fail-on", "sometimes").returncode == 2
    assert run_cli(clean_dir, "--hash", "sha1").returncode == 2
    assert run_cli(clean_dir, "--no-such-option").returncode == 2


def test_output_file_gets_json_and_terminal_gets_table(ema_dir, tmp_path):
    out = tmp_path / "report.json"
    r = run_cli(ema_dir, "--hash", "none", "-o", out)
    assert r.returncode == 0
    assert "junk.ema" in r.stdout  # the table
    rep = json.loads(out.read_text())
    assert rep["files"][0]["findings"][0]["check"] == "junk.ema"


def test_output_file_with_jsonl(clean_dir, tmp_path):
    out = tmp_path / "report.jsonl"
    assert run_cli(clean_dir, "--hash", "none", "--jsonl", "-o", out).returncode == 0
    assert len(out.read_text().splitlines()) == 3


def test_output_file_that_cannot_be_written_exits_2(clean_dir, tmp_path):
    r = run_cli(clean_dir, "--json", "-o", tmp_path / "no-such-dir" / "r.json")
    assert r.returncode == 2 and "cannot write" in r.stderr


def test_hash_none_computes_no_hash(clean_dir):
    rep = scan_json(clean_dir, "--hash", "none")
    assert all(v is None for f in rep["files"] for v in f["hashes"].values())


def test_hash_full_gives_the_blake3_of_the_file(clean_dir):
    blake3 = pytest.importorskip("blake3")
    rep = scan_json(clean_dir / "emb.safetensors")
    f = rep["files"][0]
    assert f["hashes"]["blake3"] == blake3.blake3((clean_dir / "emb.safetensors").read_bytes()).hexdigest()


def test_hash_components_leaves_file_hash_out(clean_dir):
    rep = scan_json(clean_dir / "emb.safetensors", "--hash", "components")
    f = rep["files"][0]
    assert f["hashes"]["blake3"] is None
    for c in f["components"].values():
        assert c["blake3"] is None or len(c["blake3"]) == 64


def test_sha256_option_reaches_the_core(clean_dir):
    p = clean_dir / "emb.safetensors"
    rep = scan_json(p, "--sha256")
    assert rep["files"][0]["hashes"] == _core.scan_file(str(p), hash="full", sha256=True)["hashes"]


def test_sha256_value(clean_dir):
    p = clean_dir / "emb.safetensors"
    rep = scan_json(p, "--sha256")
    assert rep["files"][0]["hashes"]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()


def test_jobs_option(layout_lib):
    one = scan_json(layout_lib, "--hash", "none", "--jobs", "1")
    many = scan_json(layout_lib, "--hash", "none", "-j", "3")
    strip = [(f["path"], f["kind"], f["arch"], f["tensors"]) for f in one["files"]]
    assert strip == [(f["path"], f["kind"], f["arch"], f["tensors"]) for f in many["files"]]
    assert run_cli(layout_lib, "--jobs", "-1").returncode == 2


def test_follow_links_option(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    synth.write_layout(outside / "emb.safetensors", "embedding-sd15")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "link.safetensors").symlink_to(outside / "emb.safetensors")
    assert scan_json(lib, "--hash", "none")["files"] == []
    files = scan_json(lib, "--hash", "none", "--follow-links")["files"]
    assert [(Path(f["path"]).name, f["kind"]) for f in files] == [("link.safetensors", "embedding")]


def _rewrite_keeping_stamp(p: Path, at: int, byte: bytes) -> None:
    """Changes one byte of `p` in place, keeping its size and mtime (what the cache keys on)."""
    st = p.stat()
    with open(p, "r+b") as f:
        f.seek(at)
        f.write(byte)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_serves_unchanged_files_and_no_cache_rescans(clean_dir, tmp_path):
    env = {"FASTSCAN_CACHE": str(tmp_path / "c" / "db.sqlite3")}
    p = clean_dir / "emb.safetensors"
    assert scan_json(p, "--hash", "none", env=env)["files"][0]["findings"] == []
    assert (tmp_path / "c" / "db.sqlite3").is_file()
    _rewrite_keeping_stamp(p, 8, b"[")  # the header is no longer a JSON object
    cached = scan_json(p, "--hash", "none", env=env)["files"][0]
    fresh = scan_json(p, "--hash", "none", "--no-cache", env=env)["files"][0]
    assert cached["findings"] == []  # served from the cache: the file was not opened
    assert [x["check"] for x in fresh["findings"]] == ["header.invalid"]


def test_no_cache_writes_no_database(clean_dir, tmp_path):
    db = tmp_path / "never" / "db.sqlite3"
    r = run_cli(clean_dir, "--hash", "none", "--json", "--no-cache", env={"FASTSCAN_CACHE": str(db)})
    assert r.returncode == 0 and json.loads(r.stdout)["summary"]["files"] == 2
    assert not db.exists()


def test_unusable_cache_warns_and_scans(clean_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    r = run_cli(clean_dir, "--hash", "none", "--json", env={"FASTSCAN_CACHE": str(tmp_path / "file" / "db")})
    assert r.returncode == 0 and json.loads(r.stdout)["summary"]["files"] == 2
    assert "warning" in r.stderr and "cache" in r.stderr


def test_info_prints_one_file_in_detail(tmp_path):
    p = synth.write_layout(tmp_path / "full.safetensors", "sd15-full-ema", metadata={"format": "pt"})
    r = run_cli("info", p, "--hash", "none")
    assert r.returncode == 0, r.stderr
    for word in ("checkpoint", "sd1", "clip_l", "unet", "vae", "ema", "junk.ema", "format", "pt", "tensors"):
        assert word in r.stdout, word
    assert "bytes: " in r.stdout  # the finding's details
    assert "identification" in r.stdout and "100.0% of 47 reference keys, confident" in r.stdout


def test_info_json(tmp_path):
    p = synth.write_layout(tmp_path / "vae.safetensors", "vae-sd")
    r = run_cli("info", p, "--json", "--hash", "none")
    f = json.loads(r.stdout)
    assert FILE_KEYS <= set(f) and (f["kind"], f["components"]["vae"]["tensors"]) == ("vae", 248)


def test_info_hash_option(tmp_path):
    blake3 = pytest.importorskip("blake3")
    p = synth.write_layout(tmp_path / "emb.safetensors", "embedding-sd15")
    digest = blake3.blake3(p.read_bytes()).hexdigest()
    assert digest in run_cli("info", p).stdout  # --hash full is the default
    assert digest not in run_cli("info", p, "--hash", "none").stdout


def test_info_sha256_option(tmp_path):
    p = synth.write_layout(tmp_path / "emb.safetensors", "embedding-sd15")
    f = json.loads(run_cli("info", p, "--json", "--sha256").stdout)
    assert f["hashes"] == _core.scan_file(str(p), hash="full", sha256=True)["hashes"]


def test_info_of_an_unreadable_entry_shows_its_error(tmp_path):
    (tmp_path / "gone.safetensors").symlink_to(tmp_path / "deleted.safetensors")
    r = run_cli("info", tmp_path / "gone.safetensors")
    assert r.returncode == 0 and "error" in r.stdout and "gone.safetensors" in r.stdout


def test_info_missing_file_exits_2(tmp_path):
    r = run_cli("info", tmp_path / "nope.safetensors")
    assert r.returncode == 2 and "nope.safetensors" in r.stderr


def test_info_of_a_directory_exits_2(tmp_path):
    r = run_cli("info", tmp_path)
    assert r.returncode == 2 and "is a directory" in r.stderr


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fastscan {_core.__version__}"


def test_help_imports_neither_rich_nor_numpy():
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fastscan", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "scan" in r.stdout
    imported = {
        line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")
    }
    assert "typer" in imported
    assert not {m for m in imported if m.split(".")[0] in ("rich", "numpy")}


def test_progress_bar_on_a_terminal(layout_lib):
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    try:
        env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
        r = subprocess.run(
            [sys.executable, "-m", "fastscan", str(layout_lib), "--hash", "none", "--json"],
            stdout=subprocess.PIPE, stderr=slave, env=env, timeout=120,
        )  # fmt: skip
        os.close(slave)
        slave = -1
        err = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            err += chunk
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert r.returncode in (0, 1)
    json.loads(r.stdout)  # stdout stays a clean JSON document
    assert b"scanning" in err and b"files" in err


def _report_of(*files: dict):
    from fastscan.model import FileReport, Report, Summary

    fs = [FileReport.from_dict(f) for f in files]
    return Report(["lib"], "2026-01-01T00:00:00+00:00", 0.5, fs, Summary.of(fs), "0.0.0")


def _finding(check: str, severity: str) -> dict:
    return {"check": check, "severity": severity, "message": f"{check} fired", "details": {"n": 1}}


def test_summary_and_problem_tables_render_the_report():
    from rich.console import Console

    from fastscan.render import print_report

    rep = _report_of(
        {"path": "lib/a.safetensors", "size": 10, "kind": "checkpoint", "arch": "sd1",
         "findings": [_finding("junk.ema", "warning")], "wasted_bytes": {"ema": 4_000_000}},
        {"path": "lib/b.safetensors", "size": 20, "kind": "checkpoint", "arch": "sd1",
         "findings": [_finding("junk.ema", "warning"), _finding("file.truncated", "error")],
         "wasted_bytes": {"ema": 1_000_000}},
        {"path": "lib/c.bin", "error": {"kind": "io", "message": "lib/c.bin: permission denied"}},
    )  # fmt: skip
    con = Console(record=True, width=200)
    print_report(rep, con)
    text = con.export_text()
    lines = [line.split() for line in text.splitlines() if line.strip()]
    rows = {line[0]: line for line in lines}
    # kind arch files size crit err warn info wasted, counting files: b has an error, a and b warnings.
    assert rows["checkpoint"][1:] == ["sd1", "2", "30", "bytes", "1", "2", "5.0", "MB"]
    assert rows["unknown"][1:] == ["unknown", "1", "0", "bytes", "1"]  # the unreadable file
    assert rows["total"][1:] == ["3", "30", "bytes", "2", "2", "5.0", "MB"]
    # The totals line counts files as the table does: 2 with an error (one unreadable), 2 with a warning.
    assert "files with problems: 0 crit, 2 err, 2 warn, 0 info" in text
    assert "1 unreadable" in text and "wasted: 5.0 MB" in text
    # Problems: junk.ema on a and b, saving 5 MB; truncated on b; the unreadable file; each file on a line.
    at = lines.index(["warn", "junk.ema", "2", "5.0", "MB"])
    assert lines[at + 1 : at + 3] == [["a.safetensors"], ["b.safetensors"]]
    at = lines.index(["err", "file.truncated", "1"])
    assert lines[at + 1] == ["b.safetensors"]
    at = lines.index(["err", "unreadable", "(io)", "1"])
    assert lines[at + 1] == ["c.bin"]


def test_clean_report_says_no_problems():
    from rich.console import Console

    from fastscan.render import print_report

    con = Console(record=True, width=120)
    print_report(_report_of({"path": "lib/a.safetensors", "size": 1, "kind": "vae"}), con)
    assert "no problems found" in con.export_text()


def test_details_lines_inline_short_values_and_list_long_ones():
    from fastscan.render import details_lines

    assert details_lines({"bytes": 5}) == ['{"bytes": 5}']
    long = {"count": 3, "keys": [f"lora_unet_block_{i}.lora_down.weight" for i in range(3)]}
    assert details_lines(long, "  ") == [
        "  count: 3",
        "  keys:",
        "    - lora_unet_block_0.lora_down.weight",
        "    - lora_unet_block_1.lora_down.weight",
        "    - lora_unet_block_2.lora_down.weight",
    ]


def test_tables_from_the_streamed_digest_equal_the_tables_of_the_whole_report(layout_lib, tmp_path):
    """Table mode keeps no file report: its digest, fed in any order, prints what the report's files do."""
    import dataclasses
    import io
    import random

    from rich.console import Console

    import fastscan
    from fastscan import render

    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(9):  # more files per problem row than the table shows
        p = synth.write_layout(lib / f"cut{i}.safetensors", "embedding-sd15")
        os.truncate(p, p.stat().st_size - 1000)
    (lib / "dir.safetensors").mkdir()
    synth.write_layout(lib / "ema.safetensors", "sd15-full-ema")
    report = fastscan.scan([layout_lib, lib], hash="none", cache=False)
    assert len(report.files) > 20
    files = list(report.files)
    random.Random(7).shuffle(files)
    slim = dataclasses.replace(report, files=[])

    def text(rep, digest=None, **kw):
        out = io.StringIO()
        con = Console(file=out, width=120, no_color=True, highlight=False)
        render.print_report(rep, con, digest=digest, **kw)
        return out.getvalue()

    for all_files in (False, True):
        streamed = render.Digest(keep_affected=all_files)
        for f in files:
            streamed.add(f)
        want = text(report, files=all_files)
        assert ("cut8.safetensors" in want) == all_files and "… and 3 more" in want
        assert text(slim, streamed, files=all_files) == want
    tsv, want_tsv = io.StringIO(), io.StringIO()
    render.write_tsv(slim, tsv, render.Digest.of(files, keep_affected=True))
    render.write_tsv(report, want_tsv)
    assert tsv.getvalue() == want_tsv.getvalue()


def _without_times(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("started", "elapsed_s")}


def test_json_written_by_the_core_is_the_report_python_writes(tmp_path):
    """`--json` and `--jsonl` alone take each file object as the JSON text the core wrote; with the
    tables (`-o`), Python writes the same report from its typed reports. Both must be the same document,
    key order included, on a library with duplicates, findings, an unreadable file and a name that is
    not UTF-8."""
    lib = tmp_path / "lib"
    lib.mkdir()
    vae = synth.write_layout(lib / "vae.safetensors", "vae-sd")
    (lib / "copy").mkdir()
    (lib / "copy" / "vae-renamed.safetensors").write_bytes(Path(vae).read_bytes())
    synth.write_layout(lib / "lora.safetensors", "lora-sd15-kohya", metadata={"ss_network_dim": "8"})
    synth.write_layout(lib / "emb.safetensors", "embedding-sd15")
    (lib / "cut.safetensors").write_bytes((1 << 20).to_bytes(8, "little") + b'{"a": ')
    Path(os.fsdecode(bytes(lib) + b"/n\xffo.safetensors")).write_bytes(b"not a model")
    args = (lib, "--hash", "full", "--fail-on", "never", "--no-cache")
    core = run_cli(*args, "--json")
    assert core.returncode == 0, core.stderr
    a = json.loads(core.stdout)
    out = tmp_path / "report.json"
    tables = subprocess.run(  # only the report file is read here
        [sys.executable, "-m", "fastscan", *map(str, args), "-o", str(out)], capture_output=True, timeout=120
    )
    assert tables.returncode == 0, tables.stderr
    b = json.loads(out.read_text())
    assert _without_times(a) == _without_times(b)
    assert [list(f) for f in a["files"]] == [list(f) for f in b["files"]]
    assert a["duplicates"] and any(f.get("path_b64") for f in a["files"])
    assert a["summary"]["errors"] == 0 and a["summary"]["files"] == 6
    lines = [json.loads(x) for x in run_cli(*args, "--jsonl").stdout.splitlines()]
    assert sorted(lines[:-1], key=lambda f: f["path"]) == a["files"]
    assert _without_times(lines[-1]) == {k: v for k, v in _without_times(a).items() if k != "files"}
