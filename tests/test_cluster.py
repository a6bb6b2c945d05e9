"""`--cluster` / `cluster=`: a scan spread over a real Dask LocalCluster (2 worker processes on 127.0.0.1)
gives the report a local scan gives, survives a worker killed mid-scan, and says what to install when
`distributed` is missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from fastscan import demo
from fastscan.api import ScanRun

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("demo")
    demo.write_library(d)
    return d


def _comparable(report) -> dict:
    d = report.to_dict()
    del d["started"], d["elapsed_s"]
    return d


def _both(paths, client, **options) -> tuple[dict, dict]:
    """(clustered report, local report) of the same inputs, timings left out; the clustered scan's
    progress ends at the totals of its report."""
    seen = []
    clustered = ScanRun(paths, cluster=client, **options).drive(progress=seen.append)
    last = seen[-1]
    assert (last.files_done, last.bytes_done) == (last.files_total, last.bytes_total)
    assert (last.files_total, last.bytes_total) == (clustered.summary.files, clustered.summary.bytes)
    assert [p.files_done for p in seen] == list(range(1, len(seen) + 1))
    local = ScanRun(paths, **options).drive()
    return _comparable(clustered), _comparable(local)


def _executing(dask_worker) -> tuple[int, list[str]]:
    return os.getpid(), [str(ts.key) for ts in dask_worker.state.executing]


def _kill_worker_running(client: Client, key_suffix: str) -> str:
    """Kills (SIGKILL) the worker process running the task whose key ends with `key_suffix`, as soon as
    one runs it; returns the task's key."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for pid, keys in client.run(_executing).values():
            for k in keys:
                if k.endswith(key_suffix):
                    os.kill(pid, signal.SIGKILL)
                    return k
        time.sleep(0.02)
    raise AssertionError("the task never ran")


def test_clustered_report_equals_local(client, library, tmp_path):
    # The whole demo library and the real files, header-level (the demo is ~48 GB of sparse files).
    got, want = _both([library, REAL], client, hash="none")
    assert got == want
    assert {str(p) for p in REAL.iterdir()} <= {f["path"] for f in got["files"]}
    assert got["summary"]["by_check"], "the demo's problems were found"

    # Hashed: the small demo files and the real ones, a copy (a duplicate group), fingerprints.
    small = [p for p in library.iterdir() if p.is_file() and p.stat().st_size < 20_000_000]
    shutil.copy(REAL / "cloneofsimo-lora_lora_disney.safetensors", tmp_path / "copy.safetensors")
    got, want = _both([*small, REAL, tmp_path], client, hash="full", sha256=True, fingerprint=True)
    assert got == want
    assert any(g["type"] == "identical-files" for g in got["duplicates"])
    assert any("fingerprint" in f for f in got["files"])
    assert all(f["hashes"]["sha256"] for f in got["files"] if f["format"] == "safetensors")


def test_cli_cluster_prints_the_local_report(client, tmp_path):
    shutil.copy(REAL / "cloneofsimo-lora_lora_disney.safetensors", tmp_path / "copy.safetensors")
    base = [sys.executable, "-m", "fastscan", "scan", "--json", "--no-cache", str(REAL), str(tmp_path)]
    local = subprocess.run(base, capture_output=True, text=True, timeout=300)
    cmd = [*base, "--cluster", client.scheduler.address]
    clustered = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert clustered.returncode == local.returncode, clustered.stderr
    got, want = json.loads(clustered.stdout), json.loads(local.stdout)
    for d in (got, want):
        del d["started"], d["elapsed_s"]
    assert got == want
    assert got["duplicates"]


def test_lost_worker_costs_only_its_files(client, library):
    big = library / "clean-vae.safetensors"  # the biggest: its task is the first, key rank 0
    small = [p for p in library.iterdir() if p.is_file() and p.stat().st_size < 20_000_000]
    paths = [big, *small]
    options = {"hash": "full", "sha256": True}
    run = ScanRun(paths, cluster=client, **options)
    key = _kill_worker_running(client, "-0")
    got = _comparable(run.drive())
    assert got == _comparable(ScanRun(paths, **options).drive())

    # The scheduler saw the task lose its worker while running, and ran it again to the end.
    story = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.story(key))
    moves = [(t[1], t[2]) for t in story]
    lost = moves.index(("processing", "released"))
    assert ("processing", "memory") in moves[lost:], story


BLOCK_DISTRIBUTED = """
import importlib.abc, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "distributed" or name.startswith("distributed."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Hide())
"""


def test_cluster_without_distributed_names_the_extra(tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(BLOCK_DISTRIBUTED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run([sys.executable, "-c", "import distributed"], env=env, capture_output=True)
    assert probe.returncode != 0, "the package was not hidden"

    base = [sys.executable, "-m", "fastscan", "scan", "--no-cache", "--hash", "none", str(REAL)]
    r = subprocess.run([*base, "--cluster", "tcp://127.0.0.1:8786"], env=env, capture_output=True, text=True)
    assert r.returncode == 2
    assert "fastscan[cluster]" in r.stderr and "Traceback" not in r.stderr
    # Without --cluster the CLI does not need it.
    r = subprocess.run(base, env=env, capture_output=True, text=True)
    assert r.returncode in (0, 1), r.stderr
