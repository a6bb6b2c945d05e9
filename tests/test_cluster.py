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


# Credentials of the test S3 server: in the workers' environment (as a deployment gives them), never in
# a task.
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_REGION": "us-east-1",
}


def _set_env(values: dict) -> None:
    os.environ.update(values)


@pytest.fixture
def s3(client):
    """A moto S3 server on the loopback address holding the real files under `real/`: (endpoint, bucket)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    old = {k: os.environ.get(k) for k in S3_KEYS}
    os.environ.update(S3_KEYS)
    try:
        s3c = boto3.client("s3", endpoint_url=endpoint)
        s3c.create_bucket(Bucket="models")
        for p in sorted(REAL.iterdir()):
            if p.name != "README.md":
                s3c.upload_file(str(p), "models", f"real/{p.name}")
        client.run(_set_env, S3_KEYS)
        yield endpoint, "models"
    finally:
        server.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_clustered_scan_of_a_bucket_through_an_endpoint_equals_the_local_one(client, s3):
    endpoint, bucket = s3
    url = f"s3://{bucket}/real/"
    for hash in ("none", "full"):
        clustered = _comparable(ScanRun([url], cluster=client, hash=hash, endpoint_url=endpoint).drive())
        local = _comparable(ScanRun([url], hash=hash, endpoint_url=endpoint, cache=False).drive())
        assert clustered == local, hash
        assert len(clustered["files"]) == len([p for p in REAL.iterdir() if p.name != "README.md"])
        assert all(f["error"] is None for f in clustered["files"]), clustered["files"]
        assert all(f["path"].startswith(url) for f in clustered["files"])
    # The files' local scan: same hashes (the workers really read the objects through the endpoint).
    by_name = {Path(f["path"]).name: f for f in clustered["files"]}
    for f in ScanRun([REAL], hash="full").drive().files:
        if f.path.endswith("README.md"):
            continue
        assert by_name[Path(f.path).name]["hashes"]["blake3"] == f.hashes.blake3


def test_a_worker_lost_on_every_try_is_a_worker_error_and_the_scan_carries_on(client, library):
    big = library / "clean-vae.safetensors"  # the biggest: its task is the first, key rank 0
    small = [p for p in library.iterdir() if p.is_file() and p.stat().st_size < 20_000_000]

    def allowed_failures(n, dask_scheduler):
        old = dask_scheduler.allowed_failures
        dask_scheduler.allowed_failures = n
        return old

    old = client.run_on_scheduler(allowed_failures, 0)  # the first loss of its worker fails the task
    try:
        run = ScanRun([big, *small], cluster=client, hash="full")
        _kill_worker_running(client, "-0")
        report = run.drive()
    finally:
        client.run_on_scheduler(allowed_failures, old)
    by_path = {f.path: f for f in report.files}
    assert len(by_path) == 1 + len(small)
    lost = by_path[str(big)]
    assert lost.error is not None and lost.error.kind == "worker", lost.error
    assert str(big) in lost.error.message and lost.size == big.stat().st_size
    # The killed worker's other tasks (queued on it) may be lost with it; every other file is scanned.
    gone = {p for p, f in by_path.items() if f.error is not None and f.error.kind == "worker"}
    rest = [p for p in by_path if p not in gone]
    assert len(rest) >= len(small) // 2, gone
    local = {f.path: f.to_dict() for f in ScanRun(rest, hash="full").drive().files}
    assert {p: by_path[p].to_dict() for p in rest} == local


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
