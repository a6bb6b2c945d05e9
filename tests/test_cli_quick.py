"""The scan command's quick path (`fastscan.cli.fast`): it reads exactly what typer reads, the same way,
leaves everything else to typer, and runs without importing typer.

What typer reads is taken from typer itself: the app runs with the scan's work replaced by a recorder of
the arguments it was given, and the quick path's reading of the same command line must equal it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fastscan import cli, synth
from fastscan.cli import fast, scan_run


def typer_reads(argv: list[str], monkeypatch) -> tuple[int, dict | None]:
    """The exit code and the arguments typer hands the scan's work for `fastscan ARGV` (None when it
    refused the command line or ran another command)."""
    seen: list[dict] = []

    def record(**kwargs):
        seen.append(kwargs)
        return 0

    with monkeypatch.context() as m:
        m.setattr(scan_run, "scan", record)
        r = CliRunner().invoke(cli.app, argv)
    return r.exit_code, (seen[0] if seen else None)


def test_quick_path_spec_is_the_typer_declaration():
    want = fast.spec_from_typer()
    if os.environ.get("FASTSCAN_BLESS"):
        with open(fast.SPEC, "w", encoding="utf-8") as f:
            f.write(json.dumps(want, indent=1) + "\n")
    got = fast.load_spec()
    assert got == want, "scan_args.json differs from the scan command: run FASTSCAN_BLESS=1 pytest -k spec"


READ_ALIKE = [
    ["lib"],
    ["scan", "lib"],
    ["lib", "other", "--json"],
    ["--json", "lib"],
    ["lib", "--jsonl", "--hash", "none"],
    ["lib", "--hash=components", "--sha256", "--no-cache"],
    ["lib", "-o", "out.json", "--files", "--format", "tsv"],
    ["lib", "--output=out.json", "--fail-on", "warning"],
    ["lib", "-j", "3", "--follow-links", "--dry-run"],
    ["lib", "--jobs=0", "--cluster", "tcp://h:8786", "--endpoint-url", "http://127.0.0.1:9000"],
    ["lib", "--hash", "none", "--hash", "full"],  # the last one counts
    ["lib", "--", "--json"],  # a path named like an option
    ["--", "lib", "--format=table"],
    ["lib", "--json", "--jsonl"],  # read alike; the scan refuses the pair
]


@pytest.mark.parametrize("argv", READ_ALIKE, ids=" ".join)
def test_quick_path_reads_the_command_line_as_typer_does(argv, monkeypatch):
    code, want = typer_reads(argv, monkeypatch)
    assert code == 0 and want is not None
    assert fast.read_args(argv) == want


LEFT_TO_TYPER = [
    [],
    ["--help"],
    ["lib", "-h"],
    ["--version"],
    ["info", "lib"],
    ["scan"],
    ["lib", "-j3"],  # a short option with its value run together
    ["lib", "--hash", "bogus"],
    ["lib", "--jobs", "-1"],
    ["lib", "--json=yes"],
    ["lib", "--output"],
    ["lib", "--jsn"],
    ["-"],
]


@pytest.mark.parametrize("argv", LEFT_TO_TYPER, ids=lambda a: " ".join(a) or "(none)")
def test_quick_path_leaves_the_rest_to_typer(argv, monkeypatch):
    assert fast.read_args(argv) is None
    code, _ = typer_reads(argv, monkeypatch)  # typer reads it: help, another command, or a usage error
    assert code in (0, 2)


def run_py(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


PROBE = """
import sys
from fastscan.cli import main
try:
    main(sys.argv[1:])
finally:
    sys.stderr.write("typer imported: %s\\n" % ("typer" in sys.modules))
"""


def test_a_plain_scan_runs_without_typer_and_the_rest_with_it(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    synth.write_layout(lib / "emb.safetensors", "embedding-sd15")
    r = run_py(PROBE, str(lib), "--json", "--hash", "components", "--no-cache")
    assert r.returncode == 0, r.stderr
    assert "typer imported: False" in r.stderr
    doc = json.loads(r.stdout)
    assert [f["kind"] for f in doc["files"]] == ["embedding"]
    assert doc["files"][0]["components"]  # the hashes the options asked for
    # a refused value goes to typer, which says what is wrong, as before
    r = run_py(PROBE, str(lib), "--hash", "bogus")
    assert r.returncode == 2
    assert "typer imported: True" in r.stderr
    assert "--hash: 'bogus' is not a choice; use one of none, components, full" in r.stderr
    # the scan's own refusals come from the same code on both paths
    r = run_py(PROBE, str(lib), "--json", "--jsonl")
    assert r.returncode == 2 and "typer imported: False" in r.stderr
    assert "fastscan: error: --json and --jsonl exclude each other" in r.stderr


def test_without_its_spec_the_quick_path_leaves_everything_to_typer(tmp_path, monkeypatch):
    monkeypatch.setattr(fast, "SPEC", str(tmp_path / "missing.json"))
    assert fast.load_spec() is None
    assert fast.read_args(["lib", "--json"]) is None
