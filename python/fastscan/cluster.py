"""A scan spread over a Dask distributed cluster: walk here, scan each file on a worker, stream reports back.

The walk runs on the client (the core's walk, as a local scan walks); each file becomes one task, biggest
first, that a worker runs with the core's own threads (`_core.scan_file`, the report a local scan makes of
the file). Tasks are pure: a rerun of one gives the same report, so a worker lost mid-scan costs only its
in-flight files, which the scheduler runs again elsewhere. Reports come back as they finish
(`as_completed`) and are assembled into one report exactly as a local scan's are (`api.ScanRun`).

`distributed` is imported only when a cluster is used (the `cluster` extra).
"""

from __future__ import annotations

import os
from typing import Any

from fastscan import _core
from fastscan.api import StoppableScan
from fastscan.model import FileReport

INSTALL_HINT = "pip install 'fastscan[cluster]'"
# Files submitted per graph update: big enough to keep the scheduler's per-message cost low on a large
# library, small enough that biggest-first holds across batches (each batch has a lower priority).
BATCH = 512
# How long to wait for the scheduler to answer, and for a first worker to join it.
CONNECT_TIMEOUT_S = 10
WORKER_WAIT_S = 60


class ClusterError(RuntimeError):
    """The cluster cannot run the scan: `distributed` missing, scheduler unreachable, no workers, or a
    worker that cannot run fastscan. The message says what to do."""


def scan_task(
    path: str,
    etag: str | None,
    hash: str,
    sha256: bool,
    fingerprint: bool,
    endpoint_url: str | None = None,
) -> dict[str, Any]:
    """One file's (or object's) scan on a worker: the core's report as plain data. Pure and safe to run
    again. An object is read at the ETag the client's listing gave (`etag`), through `endpoint_url`;
    credentials come from the worker's own environment, never from the task."""
    return _core.scan_file(
        path, hash=hash, sha256=sha256, fingerprint=fingerprint, endpoint_url=endpoint_url, etag=etag
    )


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as e:
        raise ClusterError(
            f"scanning on a Dask cluster needs the distributed package ({e}): {INSTALL_HINT}"
        ) from None
    return distributed


def _absolute(root: str) -> str:
    """`root` as a worker can open it: workers do not share this process's working directory (a URL is
    passed through as it is)."""
    if "://" in root or os.path.isabs(root):
        return root
    return os.path.join(os.getcwd(), root)


class ClusterScan(StoppableScan):
    """A scan under way on a Dask cluster, with the interface of `api.ScanIterator` (`roots`, `found`,
    `files_scanned`, `cache_warning`, `close()`).

    `cluster` is a `distributed.Client` (used as it is, left open) or a scheduler address such as
    `tcp://host:8786` (a client is opened, and closed with the scan). Submits every task at once; iterate
    to receive each `FileReport` as it finishes. Unreadable paths found by the walk come first.
    Object-store URLs are listed here (through `endpoint_url`) and each object scanned on a worker.
    """

    def __init__(
        self,
        roots: list[str],
        cluster: Any,
        *,
        hash: str,
        sha256: bool,
        jobs: int,
        follow_links: bool,
        fingerprint: bool,
        endpoint_url: str | None = None,
    ) -> None:
        distributed = _distributed()
        self._killed = distributed.KilledWorker
        self.roots = [_absolute(r) for r in roots]
        self.cache_warning: str | None = None  # workers scan every file: the scan cache is per machine
        self._own = not isinstance(cluster, distributed.Client)
        self._client = _connect(distributed, cluster) if self._own else cluster
        self._open = True
        try:
            files, failed, skipped = _core.scan_plan(
                self.roots, follow_links=follow_links, jobs=jobs, endpoint_url=endpoint_url
            )
            self.skipped_links = skipped  # links inside directories not followed, as locally
            self._failed = [FileReport.from_dict(d) for d in failed]
            self._files_total = len(files) + len(failed)
            self._bytes_total = sum(size for _, size, _ in files)
            self._scanned = 0
            options = {
                "hash": hash,
                "sha256": sha256,
                "fingerprint": fingerprint,
                "endpoint_url": endpoint_url,
            }
            self._futures = self._submit(files, options) if files else {}
            self._done = distributed.as_completed(list(self._futures), loop=self._client.loop)
        except BaseException:
            self.close()
            raise

    def _submit(self, files: list[tuple[str, int, str | None]], options: dict[str, Any]) -> dict:
        """Submits one task per file, biggest first; returns {future: (path, size)}."""
        _wait_for_workers(self._client)
        order = sorted(files, key=lambda f: -f[1])
        token = os.urandom(6).hex()
        futures: dict[Any, tuple[str, int]] = {}
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            keys = [f"fastscan-scan-{token}-{start + i}" for i in range(len(batch))]
            got = self._client.map(
                scan_task,
                [p for p, _, _ in batch],
                [etag for _, _, etag in batch],
                **options,
                key=keys,
                priority=-(start // BATCH),
            )
            futures.update(zip(got, [(p, size) for p, size, _ in batch], strict=True))
        return futures

    @property
    def found(self) -> tuple[int, int, bool]:
        """(files found, bytes found, walk finished): the walk ran before the first task was submitted."""
        return self._files_total, self._bytes_total, True

    @property
    def files_scanned(self) -> int:
        """Files whose report has come back (unreadable paths included)."""
        return self._scanned

    def __next__(self) -> FileReport:
        if not self._open:
            raise StopIteration
        if self._failed:
            self._scanned += 1
            return self._failed.pop(0)
        try:
            fut = next(self._done)
        except StopIteration:
            self.close()
            raise
        path, size = self._futures.pop(fut)
        report = self._result(fut, path, size)
        fut.release()
        self._scanned += 1
        return report

    def _result(self, fut: Any, path: str, size: int) -> FileReport:
        """The file's report; a file that kept killing the workers scanning it is a file error (the scan
        carries on); any other task failure means the cluster cannot scan (ClusterError)."""
        exc = fut.exception() if fut.status == "error" else None
        if exc is None:
            return FileReport.from_dict(fut.result())
        if isinstance(exc, self._killed):
            msg = f"{path}: every Dask worker that scanned this file was lost before it finished ({exc})"
            return FileReport.failed(path, "worker", msg, size=size)
        raise ClusterError(
            f"a Dask worker failed scanning {path}: {type(exc).__name__}: {exc} "
            f"(every worker needs `pip install fastscan` of this version, {_core.__version__})"
        )

    def close(self) -> None:
        """Stops the scan: cancels the tasks not yet finished, closes the client if this scan opened it."""
        if not self._open:
            return
        self._open = False
        futures = list(getattr(self, "_futures", {}))
        try:
            if futures:
                self._client.cancel(futures)
        finally:
            if self._own:
                self._client.close()


def _connect(distributed: Any, address: Any) -> Any:
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, ValueError) as e:
        raise ClusterError(f"cannot reach the Dask scheduler at {address}: {e}") from None


def _wait_for_workers(client: Any) -> None:
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except (TimeoutError, OSError):
        raise ClusterError(
            f"no Dask worker joined the cluster at {client.scheduler.address} within {WORKER_WAIT_S} s"
        ) from None
