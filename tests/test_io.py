"""Robust I/O (issue 9.4-9.7, 10.5): files changing under the scan, non-UTF-8 names, signals, temporary
files of fixes, a streaming scan that stops when asked, and memory that stays flat.

Processes that could die (a SIGBUS) or whose memory or signals are measured run as subprocesses.
"""

from __future__ import annotations

import base64
import json
import os
import pickletools
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fastscan
from fastscan import _core

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
# A pickle that runs `echo` when loaded (protocol 2: GLOBAL posix.system, REDUCE). Never loaded here.
EVIL = b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00echoq\x01\x85q\x02Rq\x03."


def fastscan_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastscan", *args], capture_output=True, text=True, errors="surrogateescape",
        env=ENV, **kw,
    )


def u8_header(size: int) -> bytes:
    """The start of a safetensors file of one U8 tensor of `size` bytes: length, header, padding."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


def sparse_safetensors(path: Path, size: int) -> Path:
    """A valid safetensors file of one U8 tensor of `size` bytes, all a hole (no disk, no RAM)."""
    head = u8_header(size)
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(len(head) + size)
    return path


def test_the_evil_pickle_is_well_formed():
    ops = [op.name for op, _, _ in pickletools.genops(EVIL)]
    assert ops[:2] == ["PROTO", "GLOBAL"] and "REDUCE" in ops and ops[-1] == "STOP"


def test_a_file_truncated_during_the_scan_is_reported_and_the_rest_completes(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("a.safetensors", "z.safetensors"):
        sparse_safetensors(lib / name, 64)
    big = sparse_safetensors(lib / "m-big.safetensors", 6 << 30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastscan", str(lib), "--json", "--no-cache", "-j", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    # Truncate once the scanner holds the big file open (its 6 GiB data pass then takes seconds).
    deadline = time.monotonic() + 60
    while not _has_open(proc.pid, big) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    os.truncate(big, 4096)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), (proc.returncode, err)  # not -SIGBUS
    files = {Path(f["path"]).name: f for f in json.loads(out)["files"]}
    assert sorted(files) == ["a.safetensors", "m-big.safetensors", "z.safetensors"]
    assert files["a.safetensors"]["hashes"]["blake3"] and files["z.safetensors"]["hashes"]["blake3"]
    shrunk = files["m-big.safetensors"]
    truncated = [f for f in shrunk["findings"] if f["check"] == "file.truncated"]
    assert truncated and truncated[0]["details"]["during_scan"] is True, shrunk
    assert shrunk["hashes"]["blake3"] is None
    assert all(c["blake3"] is None for c in shrunk["components"].values())


def _has_open(pid: int, path: Path) -> bool:
    fds = f"/proc/{pid}/fd"
    try:
        return any(os.readlink(os.path.join(fds, fd)) == str(path) for fd in os.listdir(fds))
    except OSError:
        return False


def _wait_for_handler(proc: subprocess.Popen, signum: int) -> None:
    """Until the process catches `signum` (its `SigCgt` mask) or has ended: on a loaded machine, a signal
    sent a fixed time after the start can come before the interpreter has a handler, and the test would
    then see the default action (killed by the signal), not fastscan's."""
    deadline = time.monotonic() + 60
    while proc.poll() is None:
        with open(f"/proc/{proc.pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        if caught >> (signum - 1) & 1:
            return
        assert time.monotonic() < deadline, "the process never installed its handler"
        time.sleep(0.01)


@pytest.fixture
def evil_dir(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    name = b"evil-\xff\xfe.pkl"
    with open(os.path.join(os.fsencode(d), name), "wb") as f:
        f.write(EVIL)
    (d / "fine.txt").write_text("x")
    return d, os.path.join(os.fsencode(d), name)


def test_a_malicious_pickle_under_a_non_utf8_name_fails_the_scan(evil_dir):
    d, raw = evil_dir
    r = fastscan_cli(str(d), "--json", "--no-cache", "--fail-on", "critical")
    assert r.returncode == 1, r.stderr
    files = json.loads(r.stdout)["files"]
    evil = [f for f in files if f["format"] == "pickle"]
    assert len(evil) == 1 and evil[0]["error"] is None
    assert any(f["severity"] == "critical" for f in evil[0]["findings"])
    # The display path replaces the bad bytes; path_b64 leads back to the file exactly.
    assert "\ufffd" in evil[0]["path"]
    assert base64.b64decode(evil[0]["path_b64"]) == raw
    assert "path_b64" not in [f for f in files if f["format"] != "pickle"][0]


def test_python_paths_are_surrogate_escaped_and_open_again(evil_dir):
    d, raw = evil_dir
    report = fastscan.scan(d, hash="none")
    evil = next(f for f in report.files if f.format == "pickle")
    assert os.fsencode(evil.path) == raw
    assert Path(evil.path).read_bytes() == EVIL
    assert json.loads(report.to_json())["files"][0]["path_b64"] == base64.b64encode(raw).decode()
    # the table prints the name too (its bytes that are not UTF-8 as escapes), without a crash
    r = fastscan_cli(str(d), "--no-cache", "--hash", "none")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "evil-\\xff\\xfe.pkl" in r.stdout and "\udcff" not in r.stdout


def test_sigterm_stops_a_scan_cleanly_with_143(tmp_path):
    for i in range(3):
        sparse_safetensors(tmp_path / f"big{i}.safetensors", 8 << 30)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastscan", str(tmp_path), "--no-cache", "-j", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    deadline = time.monotonic() + 60
    while not any(_has_open(proc.pid, tmp_path / f"big{i}.safetensors") for i in range(3)):
        assert time.monotonic() < deadline, "the scan never opened a file"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Traceback" not in err and "interrupted" in err


@pytest.mark.parametrize("mode", ["--jsonl", "--format=table"])
def test_ctrl_c_among_many_small_files_stops_cleanly_with_130(tmp_path, mode):
    """Reports of small files come quickly, so the signal's handler often runs while the core turns one
    into Python objects: the KeyboardInterrupt must come out as itself, not as a conversion error."""
    from fastscan import synth

    for i in range(300):
        synth.write_layout(tmp_path / f"emb{i:03d}.safetensors", "embedding-sd15")
    for i in range(20):
        synth.write_layout(tmp_path / f"lora{i:02d}.safetensors", "lora-sd15-kohya")
    caught = 0
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastscan", str(tmp_path), "--no-cache", mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        if mode == "--jsonl":
            assert proc.stdout.readline()  # under way: the first file's line is out
        else:  # the table prints only at the end: wait for `main` to be entered, then into the scan
            _wait_for_handler(proc, signal.SIGTERM)
            time.sleep(0.1 + 0.05 * attempt)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        if proc.returncode == 0 or (proc.returncode == -signal.SIGINT and not err):
            continue  # the scan ended before the signal (or as the interpreter closed, handlers gone)
        assert proc.returncode == 130, (proc.returncode, err)
        assert "Traceback" not in err and "fastscan: error: interrupted" in err
        caught += 1
    assert caught, "every attempt's signal came after the scan: nothing was tested"


def test_a_killed_writer_leaves_no_visible_file_and_leftovers_are_swept(tmp_path):
    out = tmp_path / "o.safetensors"
    code = (
        "import os, signal\n"
        "from fastscan import _core\n"
        f"t = _core.TempOutput({str(out)!r})\n"
        "os.write(t.fd, b'x' * 100000)\n"
        "print(t.path, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.returncode == -signal.SIGKILL
    assert r.stdout.startswith("/proc/self/fd/"), "this filesystem has O_TMPFILE: the file is unnamed"
    assert list(tmp_path.iterdir()) == []
    # The named fallback's leftovers: one from a process that is gone, one from this live process.
    dead = tmp_path / f".o.safetensors.{1 << 23}.0.fastscan-tmp"
    alive = tmp_path / f".o.safetensors.{os.getpid()}.0.fastscan-tmp"
    dead.write_bytes(b"partial")
    alive.write_bytes(b"being written")
    assert _core.sweep_temp(str(tmp_path)) == [str(dead)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


def test_temp_output_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    out = tmp_path / "o.bin"
    t = _core.TempOutput(str(out), 0o600)
    os.write(t.fd, b"new")
    out.write_bytes(b"theirs")
    with pytest.raises(FileExistsError):
        t.commit(str(out))
    assert out.read_bytes() == b"theirs"
    t.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["o.bin"]


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_closing_the_stream_stops_every_worker(tmp_path):
    for i in range(16):
        sparse_safetensors(tmp_path / f"m{i:02}.safetensors", 256 << 20)
    it = fastscan.iter_scan(tmp_path, hash="full", jobs=2)
    first = next(it)
    assert first.path.startswith(str(tmp_path))
    it.close()
    after_close = it.files_scanned
    time.sleep(1.0)
    assert it.files_scanned == after_close < 16, "scanning went on after close()"
    assert list(it) == []


def test_breaking_out_of_iter_scan_lets_its_threads_exit(tmp_path):
    for i in range(16):
        sparse_safetensors(tmp_path / f"m{i:02}.safetensors", 256 << 20)
    before = _threads()
    for _ in fastscan.iter_scan(tmp_path, hash="full", jobs=2):
        assert _threads() > before
        break
    # The dropped iterator closed the scan: the pool's threads exit (they may take a moment to notice).
    deadline = time.monotonic() + 20
    while _threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads() == before


def _waits_of_this_thread() -> int:
    """How often this thread has blocked (voluntary context switches) so far."""
    with open("/proc/thread-self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))


def test_reports_reach_the_reader_in_batches_not_one_wake_up_per_file(tmp_path):
    # Files that take the scanning threads longer than the reader takes per report: the reader waits
    # for each one. Woken for every report, it blocked about 180 times over 300 files (and each wake-up
    # took a core from a scanning thread); it now lingers and takes what has come.
    for i in range(300):
        (tmp_path / f"f{i:03}.safetensors").write_bytes(u8_header(256 << 10) + os.urandom(256 << 10))
    it = fastscan.iter_scan(tmp_path, hash="full", jobs=2)
    before = _waits_of_this_thread()
    reports = list(it)
    waits = _waits_of_this_thread() - before
    assert sorted(r.path for r in reports) == sorted(str(p) for p in tmp_path.iterdir())
    assert all(r.hashes.blake3 for r in reports)
    assert waits < len(reports) / 4, f"the reader blocked {waits} times for {len(reports)} reports"


def test_progress_learns_the_totals_as_the_walk_finds_them(tmp_path):
    for i in range(50):
        (tmp_path / f"f{i}.bin").write_bytes(b"x" * i)
    seen = []
    fastscan.scan(tmp_path, hash="none", progress=seen.append)
    totals = [p.files_total for p in seen]
    assert totals == sorted(totals) and all(p.files_done <= p.files_total for p in seen)
    assert seen[-1].files_total == 50 and seen[-1].bytes_total == sum(range(50))
    it = fastscan.iter_scan(tmp_path, hash="none")
    assert len(list(it)) == 50
    assert it.found == (50, sum(range(50)), True)  # once the scan has ended the walk has too


RSS_SCRIPT = """
import resource, sys, fastscan
n = 0
for r in fastscan.iter_scan(sys.argv[1], hash="full", jobs=2):
    n += 1
    if n == 2000:
        early = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
late = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(n, early, late)
"""


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    for i in range(200):
        sub = d / f"d{i:03}"
        sub.mkdir()
        for j in range(100):
            (sub / f"f{j:03}.bin").touch()
    return d


def test_streaming_20000_files_keeps_memory_flat(many_files):
    r = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(many_files)], capture_output=True, text=True, env=ENV
    )
    assert r.returncode == 0, r.stderr
    n, early, late = map(int, r.stdout.split())
    assert n == 20000
    # ru_maxrss is in KiB: 18,000 more reports may not grow the peak by more than 40 MiB
    assert late - early < 40 * 1024, f"peak RSS grew {(late - early) // 1024} MiB"


# Runs the CLI in a fresh process whose only child it is, so RUSAGE_CHILDREN is that run's peak alone.
CLI_RSS_SCRIPT = """
import resource, subprocess, sys
r = subprocess.run([sys.executable, "-m", "fastscan", *sys.argv[1:]], stdout=subprocess.PIPE)
lines = r.stdout.count(b"\\n")
print(r.returncode, lines, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_jsonl_and_default_runs_over_20000_files_stay_small(many_files):
    for args in (["--jsonl"], []):
        r = subprocess.run(
            [sys.executable, "-c", CLI_RSS_SCRIPT, str(many_files), "--no-cache", *args],
            capture_output=True, text=True, env=ENV,
        )  # fmt: skip
        code, lines, peak = map(int, r.stdout.split())
        assert code == 0, r.stderr
        if args:
            assert lines == 20001  # a line per file and the summary
        assert peak < 300 * 1024, f"{args}: peak RSS {peak // 1024} MiB"  # ru_maxrss is in KiB
