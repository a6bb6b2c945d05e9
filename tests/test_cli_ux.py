"""The command line as a person meets it: plain usage errors, bounded --jobs, links, pipes, 80-column tables,
duplicates, `--files`, `info` metadata, fix/convert/hashes/dedupe behaviour (issue 16)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fastscan import synth
from test_cli import run_cli

COMMANDS = ["scan", "info", "demo", "dedupe", "hashes", "fix", "convert", "extract", "bake-vae"]
FRAMEWORK_WORDS = ["Value error", "{PATH}", "<list[str]>", "<str>", "<path>", "Possible options", "<int>"]


def emb(path: Path, **kw) -> Path:
    """A textual inversion for SD 1.5 (embedding-sd15 layout): 24.7 kB, no findings."""
    return synth.write_layout(path, "embedding-sd15", **kw)


def nan_emb(path: Path) -> Path:
    """embedding-sd15 holding a NaN: values.nan-inf, an error no fix repairs."""
    vec = np.zeros((8, 768), dtype="<f4")
    vec[3, 100] = np.nan
    return emb(path, data={"emb_params": vec.tobytes()})


# ---------- usage and help in plain words ----------


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_shows_no_framework_labels(cmd):
    r = run_cli(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert f"Usage: fastscan {cmd} [OPTIONS]" in r.stdout
    for word in FRAMEWORK_WORDS:
        assert word not in r.stdout, (cmd, word)


@pytest.mark.parametrize(
    "args, says",
    [
        (
            ["scan", ".", "--hash", "bogus"],
            "--hash: 'bogus' is not a choice; use one of none, components, full",
        ),
        (["scan", ".", "--fail-on", "sometimes"], "--fail-on: 'sometimes' is not a choice"),
        (["scan", ".", "--bogus"], "unknown option --bogus"),
        (["scan", ".", "--jbos", "2"], "unknown option --jbos (did you mean --jobs?)"),
        (["scan"], "missing PATH"),
        (["scan", ".", "--jobs", "-1"], "give 0 (one per core) or more"),
        (
            ["fix", "x", "--prune", "everything"],
            "--prune: 'everything' is not a choice; use one of ema, junk, all",
        ),
        (["fix", "x", "--dtype", "fp8"], "--dtype: 'fp8' is not a choice; use one of fp16, bf16, fp32"),
        (["extract", "x", "--component", "te", "-o", "y"], "--component: 'te' is not a choice"),
        (["hashes", ".", "--format", "md5"], "--format: 'md5' is not a choice"),
        (["dedupe", ".", "--action", "move"], "--action: 'move' is not a choice"),
        (["dedupe", ".", "--keep", "biggest"], "'biggest' is not a rule; use newest, oldest or path:PREFIX"),
    ],
)
def test_usage_errors_in_plain_words(args, says):
    r = run_cli(*args)
    assert r.returncode == 2
    assert r.stderr.startswith("fastscan: error: ") and says in r.stderr, r.stderr
    for word in FRAMEWORK_WORDS:
        assert word not in r.stderr


def test_the_cli_package_has_no_import_circle():
    # Each command module imports on its own, before the app exists.
    code = "import importlib, sys\n" + "".join(
        f"importlib.import_module('fastscan.cli.{m}')\nassert 'fastscan.cli.root' not in sys.modules\n"
        for m in ("errors", "choices", "scan", "info", "demo", "dedupe", "hashes", "fix")
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# ---------- jobs, links, pipes ----------


def test_jobs_are_capped_at_four_per_core(tmp_path):
    emb(tmp_path / "a.safetensors")
    t = time.perf_counter()
    r = run_cli(tmp_path, "--jobs", "100000", "--hash", "none", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["summary"]["files"] == 1
    cap = 4 * (os.cpu_count() or 1)
    assert f"--jobs 100000 is more than 4 threads per core; using {cap}" in r.stderr
    assert time.perf_counter() - t < 60


def test_a_symlink_to_a_file_given_as_root_is_scanned(tmp_path):
    target = emb(tmp_path / "store" / "emb.safetensors") if (tmp_path / "store").mkdir() is None else None
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    rep = json.loads(run_cli(link, "--hash", "none", "--json").stdout)
    assert [(f["path"], f["kind"]) for f in rep["files"]] == [(str(link), "embedding")]


def test_a_dangling_link_is_an_io_error_not_a_loop(tmp_path):
    lib = tmp_path / "loop-in-the-name"  # the kind must not come from any message text
    lib.mkdir()
    (lib / "gone.safetensors").symlink_to(tmp_path / "deleted.safetensors")
    rep = json.loads(run_cli(lib, "--follow-links", "--hash", "none", "--json").stdout)
    assert [f["error"]["kind"] for f in rep["files"]] == ["io"]


@pytest.mark.parametrize("fmt", [["--json"], [], ["--format", "tsv"], ["--jsonl"]])
def test_a_closed_pipe_exits_2(tmp_path, fmt):
    emb(tmp_path / "a.safetensors")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        env = {**os.environ, "FASTSCAN_CACHE": str(tmp_path / "c.db")}
        p = subprocess.run(
            [sys.executable, "-m", "fastscan", str(tmp_path), "--hash", "none", *fmt],
            stdout=write, stderr=subprocess.PIPE, env=env, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write)
    assert p.returncode == 2, p.stderr


# ---------- tables ----------

SIZE = re.compile(r"\d+(\.\d)? (bytes|kB|MB|GB|TB)")


@pytest.fixture(scope="module")
def demo_lib(tmp_path_factory) -> Path:
    from fastscan import demo

    d = tmp_path_factory.mktemp("demo") / "library with a long folder name for elision"
    demo.write_library(d)
    return d


@pytest.fixture(scope="module")
def demo_scan(demo_lib):
    from fastscan.api import scan

    return scan([str(demo_lib)], hash="none")


@pytest.mark.parametrize("width", [80, 120])
def test_tables_fit_the_width_sizes_never_split_headers_never_cut(demo_scan, width):
    from rich.console import Console

    from fastscan.render import print_report

    con = Console(record=True, width=width)
    print_report(demo_scan, con, files=True)
    text = con.export_text()
    lines = text.splitlines()
    assert all(len(line.rstrip()) <= width for line in lines), [x for x in lines if len(x.rstrip()) > width]
    header = next(line for line in lines if line.split()[:2] == ["kind", "arch"])
    assert header.split() == ["kind", "arch", "files", "size", "crit", "err", "warn", "info", "wasted"]
    assert "crit/err/warn/info: files with a finding of that severity" in text
    for a, b in zip(lines, lines[1:], strict=False):  # a size is never split across two lines
        assert not (re.search(r"\d(\.\d)?$", a.rstrip()) and re.match(r"\s*(bytes|kB|MB|GB|TB)\b", b)), (a, b)
    for check in ("pickle.dangerous-import", "file.unaccounted-bytes", "text-encoder.missing", "junk.ema"):
        assert re.search(rf"\b{re.escape(check)}\b", text), check
    for word in ("critic…", "warni…", "unkno…", "checkp…"):
        assert word not in text
    # Every file name stays whole (elision only takes folders).
    from fastscan import demo

    for name, checks in demo.expected_checks("none").items():
        if checks:
            assert name in text, name


def test_long_paths_are_elided_in_the_middle_keeping_the_name():
    from fastscan.render import elide

    p = "/models/stable-diffusion/checkpoints/realistic/very-long-folder-name/model-v2.safetensors"
    e = elide(p, 50)
    assert len(e) == 50 and e.endswith("/model-v2.safetensors") and "…" in e and e.startswith("/models")
    assert elide("short/name.safetensors", 50) == "short/name.safetensors"


def test_on_a_pipe_nothing_wraps_or_is_elided(tmp_path):
    deep = tmp_path / ("a-very-long-folder-name-" * 6) / "sub"
    deep.mkdir(parents=True)
    p = emb(deep / "cut-short-embedding.safetensors")
    os.truncate(p, p.stat().st_size - 100)
    r = run_cli(tmp_path, "--hash", "none")
    assert r.returncode == 1
    assert str(p.relative_to(tmp_path)) in r.stdout.splitlines()[-3].strip() or any(
        line.strip() == str(p.relative_to(tmp_path)) for line in r.stdout.splitlines()
    )
    assert "\x1b[" not in r.stdout  # plain text


def test_tsv_format_one_line_per_finding(tmp_path):
    p = emb(tmp_path / "cut.safetensors")
    os.truncate(p, p.stat().st_size - 100)
    r = run_cli(tmp_path, "--hash", "none", "--format", "tsv")
    rows = [line.split("\t") for line in r.stdout.splitlines()]
    assert rows[0] == ["path", "severity", "check", "action", "message"]
    assert [row[:4] for row in rows[1:]] == [[str(p), "error", "file.truncated", "re-download"]]


def test_files_lists_every_affected_file_with_its_action(tmp_path):
    paths = []
    for i in range(8):  # more than the Problems section shows
        p = emb(tmp_path / f"cut-{i}.safetensors")
        os.truncate(p, p.stat().st_size - 100)
        paths.append(p)
    r = run_cli(tmp_path, "--hash", "none")
    assert "… and 2 more (--files lists them all)" in r.stdout
    r = run_cli(tmp_path, "--hash", "none", "--files")
    text = r.stdout
    for p in paths:
        at = text.index(str(p))
        block = text[at : at + 400]
        assert "file.truncated" in block and "re-download" in block


def test_duplicates_line_under_the_tables(tmp_path):
    a = emb(tmp_path / "a.safetensors")
    shutil.copy(a, tmp_path / "b.safetensors")
    r = run_cli(tmp_path)
    size = a.stat().st_size
    from rich.filesize import decimal

    assert f"duplicates: 1 group(s) of redundant copies, {decimal(size)} reclaimable" in r.stdout
    assert f"fastscan dedupe {tmp_path}" in r.stdout
    assert "duplicates:" not in run_cli(tmp_path, "--hash", "none").stdout  # no hashes, no groups


def test_library_and_problems_count_files_the_same_way():
    from rich.console import Console

    from fastscan.model import FileReport, Report, Summary
    from fastscan.render import print_report

    two_errors = {"path": "l/a", "size": 1, "findings": [
        {"check": "file.truncated", "severity": "error", "message": ""},
        {"check": "header.invalid", "severity": "error", "message": ""},
    ]}  # fmt: skip
    unreadable = {"path": "l/b", "error": {"kind": "io", "message": "l/b: denied"}}
    fs = [FileReport.from_dict(d) for d in (two_errors, unreadable)]
    rep = Report(["l"], "t", 0.1, fs, Summary.of(fs), "0")
    con = Console(record=True, width=100)
    print_report(rep, con)
    text = con.export_text()
    total = next(line.split() for line in text.splitlines() if line.split()[:1] == ["total"])
    assert total[1:5] == ["2", "1", "byte", "2"]  # 2 files, both in err (one unreadable)
    assert "files with problems: 0 crit, 2 err" in text and "1 unreadable" in text


def test_problems_list_each_file_under_its_own_severity(demo_scan):
    """The demo's SDXL fine-tune with exact F16 position_ids has an info `clip.position-ids`; the drifted
    SD1.5 files an error one. Each sits under a row of its own severity, never an info file under err."""
    from rich.console import Console

    from fastscan.render import print_problems

    sev_of = {
        f.path.rsplit("/", 1)[-1]: x.severity
        for f in demo_scan.files
        for x in f.findings
        if x.check == "clip.position-ids"
    }
    assert "info" in sev_of.values() and "error" in sev_of.values()  # the demo holds both kinds
    con = Console(record=True, width=120)
    print_problems(demo_scan, con)
    row_sev = None
    listed = {}
    for line in con.export_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "clip.position-ids":
            row_sev = {"err": "error", "info": "info", "warn": "warning", "crit": "critical"}[parts[0]]
        elif parts and parts[0] in ("crit", "err", "warn", "info"):
            row_sev = None
        elif row_sev and len(parts) == 1:
            listed[parts[0].rsplit("/", 1)[-1]] = row_sev
    assert listed == sev_of


def test_rendering_20k_files_is_linear():
    from rich.console import Console

    from fastscan.model import FileReport, Report, Summary
    from fastscan.render import print_report

    fs = [
        FileReport.from_dict({"path": f"lib/{i:06}.safetensors", "size": 0, "findings": [
            {"check": "file.truncated", "severity": "error", "message": "empty"}]})
        for i in range(20_000)
    ]  # fmt: skip
    rep = Report(["lib"], "t", 0.1, fs, Summary.of(fs), "0")
    t = time.perf_counter()
    print_report(rep, Console(file=open(os.devnull, "w"), width=80), files=False)  # noqa: SIM115
    assert time.perf_counter() - t < 5


# ---------- info ----------


def test_info_condenses_metadata_in_natural_order(tmp_path):
    meta = {f"unet:{i}:rank": "4" for i in range(200)}
    meta["ss_tag_frequency"] = json.dumps({f"tag{i}": i for i in range(400)})
    p = emb(tmp_path / "lora.safetensors", metadata=meta)
    r = run_cli("info", p, "--hash", "none")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert len(out.splitlines()) < 60
    assert "Metadata (201 keys)" in out and "more" in out and "--all-metadata" in out
    assert out.index("unet:2:rank") < out.index("unet:10:rank")  # natural, not string, order
    full = run_cli("info", p, "--hash", "none", "--all-metadata").stdout
    assert "unet:199:rank" in full


# ---------- text from files that would drive the terminal ----------

# clear the screen, hide what follows, show the rest right to left, ring the bell
HOSTILE = "evil\x1b[2J\x1b[8m\u202eslp\x07"
SHOWN = "evil\\x1b[2J\\x1b[8m\\u202eslp\\x07"


def _drives_terminal(text: str, allowed: str = "\n") -> list[str]:
    """The characters of `text` a terminal acts on or reorders (but those `allowed`)."""
    return [c for c in text if (ord(c) < 0x20 and c not in allowed) or 0x7F <= ord(c) < 0xA0 or c == "\u202e"]


def test_names_and_metadata_from_files_are_printed_as_escapes_not_sent_to_the_terminal(tmp_path):
    # A file name (with a byte that is not UTF-8) and a metadata value written by whoever made the file.
    name = os.fsdecode(HOSTILE.encode() + b"\xff.safetensors")
    vec = np.zeros((8, 768), dtype="<f4")
    vec[3, 100] = np.nan
    f = emb(tmp_path / name, data={"emb_params": vec.tobytes()}, metadata={"comment": HOSTILE})
    shown_name = SHOWN + "\\xff.safetensors"
    for args in [(), ("--files",), ("--files", "--format", "tsv")]:
        r = run_cli(tmp_path, "--no-cache", *args)  # text=True: a raw 0xff byte would not even decode
        assert r.returncode == 1, r.stderr
        assert _drives_terminal(r.stdout, "\n\t" if "tsv" in args else "\n") == [], args
        assert shown_name in r.stdout, args
    listing = run_cli(tmp_path, "--dry-run")
    assert listing.returncode == 0 and _drives_terminal(listing.stdout, "\n\t") == []
    assert SHOWN in listing.stdout  # (the plan's paths are for display: a byte not UTF-8 is U+FFFD)
    info = run_cli("info", f, "--hash", "none")
    assert info.returncode == 0, info.stderr
    assert _drives_terminal(info.stdout) == []
    assert shown_name in info.stdout and SHOWN in info.stdout  # the name, and the metadata value
    missing = run_cli("info", tmp_path / f"gone-{HOSTILE}.safetensors")
    assert missing.returncode == 2
    assert _drives_terminal(missing.stderr) == [] and f"gone-{SHOWN}" in missing.stderr
    # the JSON report keeps the exact text
    report = json.loads(run_cli(tmp_path, "--no-cache", "--json", "--hash", "none").stdout)
    assert report["files"][0]["metadata"]["comment"] == HOSTILE


def test_visible_escapes_only_what_a_terminal_acts_on():
    from fastscan.terminal import markup, visible

    assert visible("a\tb\nc\x1b[0m\x7f\x9b") == "a\\x09b\\x0ac\\x1b[0m\\x7f\\x9b"
    assert visible("\u202ecod.safetensors\u2066") == "\\u202ecod.safetensors\\u2066"
    assert visible(os.fsdecode(b"caf\xe9")) == "caf\\xe9"  # Latin-1 bytes, not UTF-8
    assert visible("café 模型 ü.safetensors") == "café 模型 ü.safetensors"
    assert markup("[red]x\x1b") == "\\[red]x\\x1b"


# ---------- fix / convert ----------


def test_fix_of_unrepairable_damage_says_re_download_and_exits_1(tmp_path):
    p = nan_emb(tmp_path / "nan.safetensors")
    r = run_cli("fix", p, "-o", tmp_path / "out.safetensors")
    assert r.returncode == 1
    assert "cannot repair values.nan-inf" in r.stdout and "re-download" in r.stdout
    cut = emb(tmp_path / "cut.safetensors")
    os.truncate(cut, cut.stat().st_size - 100)
    r = run_cli("fix", cut, "-o", tmp_path / "out2.safetensors")
    assert r.returncode == 1 and "re-download" in r.stderr
    assert not (tmp_path / "out2.safetensors").exists()


def test_fix_output_keeps_the_mode_and_the_backup_keeps_the_times(tmp_path):
    src = emb(tmp_path / "t.safetensors", trailing=b"stray")
    os.chmod(src, 0o600)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    out = tmp_path / "o.safetensors"
    r = run_cli("fix", src, "-o", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bdir = tmp_path / "b"
    bdir.mkdir()
    r = run_cli("fix", src, "--backup", bdir)
    assert r.returncode == 0, r.stdout + r.stderr
    kept = bdir / "t.safetensors"
    assert kept.stat().st_mtime == 1_600_000_000 and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(src.stat().st_mode) == 0o600
    assert src.stat().st_size == out.stat().st_size

    def data_bytes(p):  # the fix adds its record to the header and drops the 5 stray bytes after the data
        return p.stat().st_size - 8 - int.from_bytes(p.read_bytes()[:8], "little")

    assert data_bytes(out) == data_bytes(kept) - 5


def test_fix_over_a_folder_plans_then_fixes_each_file(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    a = emb(lib / "a.safetensors", trailing=b"stray")
    b = emb(lib / "b.safetensors", trailing=b"xx")
    ok = emb(lib / "ok.safetensors")
    before = {p: p.read_bytes() for p in (a, b, ok)}
    r = run_cli("fix", lib, "--dry-run")
    assert r.returncode == 0, r.stderr
    # 7 stray bytes dropped, less the `fastscan.fix` record each output's header gains
    assert "Plan (3 file(s))" in r.stdout and "2 file(s) to fix, saving" in r.stdout
    assert {p: p.read_bytes() for p in before} == before  # a dry run writes nothing
    r = run_cli("fix", lib)
    assert r.returncode == 2 and "--backup DIR" in r.stderr
    bdir = tmp_path / "backup"
    bdir.mkdir()
    r = run_cli("fix", lib, "--backup", bdir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fixed 2 of 2 file(s)" in r.stdout

    def data_bytes(raw: bytes) -> int:
        return len(raw) - 8 - int.from_bytes(raw[:8], "little")

    assert data_bytes(a.read_bytes()) == data_bytes(before[a]) - 5
    assert data_bytes(b.read_bytes()) == data_bytes(before[b]) - 2
    assert (bdir / "a.safetensors").read_bytes() == before[a] and ok.read_bytes() == before[ok]
    nan_emb(lib / "nan.safetensors")
    r = run_cli("fix", lib, "--dry-run")
    assert r.returncode == 1 and "re-download" in r.stdout  # the worst result sets the exit code


def test_convert_writes_beside_the_input_by_default_and_takes_folders(tmp_path):
    import torchzip

    lib = tmp_path / "lib"
    lib.mkdir()
    tensors = synth.load_layout("embedding-sd15")["tensors"]
    torchzip.write_zip(lib / "a.ckpt", tensors)
    torchzip.write_zip(lib / "b.pt", tensors)
    os.chmod(lib / "a.ckpt", 0o600)
    r = run_cli("convert", lib / "a.ckpt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (lib / "a.safetensors").is_file() and stat.S_IMODE((lib / "a.safetensors").stat().st_mode) == 0o600
    r = run_cli("convert", lib)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "exists: skipped" in r.stdout and "converted 1 of 1 file(s)" in r.stdout
    assert (lib / "b.safetensors").is_file()


# ---------- hashes ----------


def random_emb(path: Path) -> Path:
    """embedding-sd15 with random values: a model file (the core hashes models) with distinct bytes."""
    return emb(path, data={"emb_params": os.urandom(8 * 768 * 4)})


def test_hashes_sha256sum_lines_pass_sha256sum_check(tmp_path):
    for i in range(3):
        random_emb(tmp_path / f"f{i}.safetensors")
    random_emb(tmp_path / "with space.safetensors")
    (tmp_path / "notes.txt").write_text("not a model")
    r = run_cli("hashes", ".", "--format", "sha256sum", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "notes.txt: not a model file; not hashed" in r.stderr
    (tmp_path / "SHA256SUMS").write_text(r.stdout)
    if shutil.which("sha256sum"):
        chk = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path, capture_output=True, text=True)
        assert chk.returncode == 0 and chk.stdout.count(": OK") == 4, chk.stdout + chk.stderr
    for line in r.stdout.splitlines():
        digest, name = line.split("  ", 1)
        assert digest == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()


def test_hashes_b3sum_format_and_check(tmp_path):
    blake3 = pytest.importorskip("blake3")
    for i in range(3):
        random_emb(tmp_path / f"f{i}.safetensors")
    r = run_cli("hashes", ".", cwd=tmp_path)
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        digest, name = line.split("  ", 1)
        assert digest == blake3.blake3((tmp_path / name).read_bytes()).hexdigest()
    (tmp_path / "B3SUMS").write_text(r.stdout)
    ok = run_cli("hashes", "--check", "B3SUMS", cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.count(": OK") == 3
    random_emb(tmp_path / "f1.safetensors")
    bad = run_cli("hashes", "--check", "B3SUMS", cwd=tmp_path)
    assert bad.returncode == 1 and "f1.safetensors: FAILED" in bad.stdout and bad.stdout.count(": OK") == 2


def test_hashes_autov2_and_csv(tmp_path):
    data = random_emb(tmp_path / "m.safetensors").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    r = run_cli("hashes", tmp_path / "m.safetensors", "--format", "autov2")
    assert r.stdout == f"{sha[:10]}  {tmp_path / 'm.safetensors'}\n"
    rows = run_cli("hashes", tmp_path, "--format", "csv").stdout.splitlines()
    assert rows[0] == "path,size,blake3,sha256,autov2,autov1,addnet"
    assert rows[1].split(",")[:2] == [str(tmp_path / "m.safetensors"), str(len(data))] and sha in rows[1]


# ---------- dedupe ----------


def test_dedupe_never_counts_a_damaged_file_and_names_the_copy_to_keep(tmp_path):
    a = emb(tmp_path / "a.safetensors")
    shutil.copy(a, tmp_path / "b.safetensors")
    nan_emb(tmp_path / "c.safetensors")  # other bytes, same names: damaged, never "same weights"
    doc = json.loads(run_cli("dedupe", tmp_path, "--json").stdout)
    assert [(g["type"], g["keep"] is not None) for g in doc["duplicates"]] == [("identical-files", True)]
    r = run_cli("dedupe", tmp_path)
    assert "keep " in r.stdout and "c.safetensors" not in r.stdout


def test_dedupe_actions_dry_run_by_default_then_hardlink(tmp_path):
    a = emb(tmp_path / "a.safetensors")
    os.utime(a, (1_000, 1_000))  # the oldest: kept by default
    b = tmp_path / "b.safetensors"
    shutil.copy(a, b)
    r = run_cli("dedupe", tmp_path, "--action", "hardlink")
    assert r.returncode == 0 and "dry run" in r.stdout and "would hard-link" in r.stdout
    assert a.stat().st_ino != b.stat().st_ino
    r = run_cli("dedupe", tmp_path, "--action", "hardlink", "--apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert a.stat().st_ino == b.stat().st_ino and f"keep {a}" in r.stdout


def test_dedupe_reflink_where_the_filesystem_cannot_says_so_and_changes_nothing(tmp_path):
    """The temp dir here is ext4 (no FICLONE): a clear per-file error, exit 1, both copies untouched."""
    a = emb(tmp_path / "a.safetensors")
    os.utime(a, (1_000, 1_000))
    b = tmp_path / "b.safetensors"
    shutil.copy(a, b)
    ino = b.stat().st_ino
    r = run_cli("dedupe", tmp_path, "--action", "reflink", "--apply")
    if "reflinked" in r.stdout and "cannot" not in r.stdout:
        pytest.skip("this temp dir's filesystem supports reflinks; the success path is tested below")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"cannot reflink {b}" in r.stdout and "this filesystem cannot reflink" in r.stdout
    assert b.stat().st_ino == ino and b.read_bytes() == a.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors"]


@pytest.fixture
def reflink_dir(tmp_path):
    """A folder on a filesystem with reflinks: $FASTSCAN_REFLINK_DIR, else (as root, with xfsprogs) a
    loopback XFS image mounted for the test."""
    given = os.environ.get("FASTSCAN_REFLINK_DIR")
    if given:
        d = Path(given) / f"fastscan-test-{os.getpid()}"
        d.mkdir()
        yield d
        shutil.rmtree(d)
        return
    if os.geteuid() != 0 or not shutil.which("mkfs.xfs"):
        pytest.skip("needs a reflink filesystem: set FASTSCAN_REFLINK_DIR, or run as root with xfsprogs")
    img, mnt = tmp_path / "xfs.img", tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(img)], check=True)
    if subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a loopback image here (no loop device or no permission)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _extents(path: Path) -> list[str]:
    """Physical extents of a file, from `filefrag -v` (independent of fastscan)."""
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True).stdout
    return [line.split(":")[2].strip() for line in out.splitlines() if re.match(r"\s*\d+:", line)]


def test_dedupe_reflink_clones_the_copy_and_keeps_its_mode_and_times(reflink_dir):
    a = emb(reflink_dir / "a.safetensors")
    os.utime(a, (1_000, 1_000))  # the oldest: kept
    b = reflink_dir / "b.safetensors"
    shutil.copy(a, b)
    os.chmod(b, 0o600)
    os.utime(b, (2_000, 2_000))
    assert _extents(a) != _extents(b)  # two copies of the data
    r = run_cli("dedupe", reflink_dir, "--action", "reflink")
    assert r.returncode == 0 and "would reflink" in r.stdout and _extents(a) != _extents(b)
    r = run_cli("dedupe", reflink_dir, "--action", "reflink", "--apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"reflinked {b}" in r.stdout and "1 copy reflinked" in r.stdout
    assert _extents(a) == _extents(b)  # one copy of the data, shared
    assert b.read_bytes() == a.read_bytes() and a.stat().st_ino != b.stat().st_ino
    st = b.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime == 2_000
    assert sorted(p.name for p in reflink_dir.iterdir()) == ["a.safetensors", "b.safetensors"]


def test_dedupe_delete_keeps_by_rule_and_never_the_last_copy(tmp_path):
    a = emb(tmp_path / "keepers" / "a.safetensors") if (tmp_path / "keepers").mkdir() is None else None
    b = tmp_path / "b.safetensors"
    shutil.copy(a, b)
    r = run_cli("dedupe", tmp_path, "--action", "delete", "--keep", f"path:{tmp_path / 'keepers'}", "--apply")
    assert r.returncode == 0, r.stdout + r.stderr
    assert a.exists() and not b.exists()
    r = run_cli("dedupe", tmp_path, "--action", "delete", "--apply")  # one copy left: nothing to do
    assert r.returncode == 0 and a.exists() and "0 copies" in r.stdout


def test_info_details_shorten_long_lists():
    from fastscan.render import details_lines

    lines = details_lines({"keys": [f"lora_key_{i}" for i in range(20)]}, "  ")
    assert lines == [
        "  keys:",
        *(f"    - lora_key_{i}" for i in range(8)),
        "    … and 12 more (--json lists them all)",
    ]


def test_a_remedy_in_words_wraps_under_itself_and_a_command_stays_one_line():
    from fastscan.advice import Remedy
    from fastscan.render import remedy_line

    words = remedy_line(60, Remedy.redownload, "/m/cut.safetensors", 2).splitlines()
    assert len(words) > 1 and all(len(line) <= 60 + len("[green][/]") for line in words)
    assert words[0].startswith("  [green]→[/] re-download it")
    assert all(line.startswith("    ") and not line.startswith("     ") for line in words[1:])
    long = "/models/" + "x" * 80 + ".safetensors"
    command = remedy_line(60, Remedy.fix, long, 6)
    assert command == f"      [green]→[/] fastscan fix {long}"  # copies whole
