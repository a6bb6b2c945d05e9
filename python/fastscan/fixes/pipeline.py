"""Reading ahead on a thread: the next chunks are read while the current one is hashed and written."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

from fastscan.fixes.source import CHUNK

END = object()  # marks the end of one item's chunks


class _Stopped(Exception):
    pass


class Prefetch:
    """Iterates what `produce(take)` yields, produced on a thread at most `depth` read buffers ahead.

    `produce` gets `take(n)`, which hands it a free buffer of at least n bytes to read into; a buffer is
    reused once the consumer has moved past the item it was yielded with. Errors in `produce` are raised
    in the consumer; closing the iterator early stops the thread.
    """

    def __init__(self, produce: Callable[[Callable[[int], bytearray]], Iterator], depth: int = 3):
        self.free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(depth):
            self.free.put(bytearray(CHUNK))
        self.items: queue.Queue = queue.Queue(maxsize=4 * depth)
        self.stop = threading.Event()
        self.taken: list[bytearray] = []
        self.thread = threading.Thread(target=self._run, args=(produce,), daemon=True, name="fastscan-read")

    def _take(self, n: int) -> bytearray:
        while not self.stop.is_set():
            try:
                buf = self.free.get(timeout=0.1)
            except queue.Empty:
                continue
            if len(buf) < n:
                buf = bytearray(n)
            self.taken.append(buf)
            return buf
        raise _Stopped

    def _put(self, entry) -> None:
        while not self.stop.is_set():
            try:
                self.items.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _run(self, produce) -> None:
        try:
            for item in produce(self._take):
                bufs, self.taken = self.taken, []
                self._put((False, item, bufs))
            self._put((True, None, []))
        except _Stopped:
            pass
        except BaseException as e:  # handed to the consumer
            try:
                self._put((True, e, []))
            except _Stopped:
                pass

    def __iter__(self) -> Iterator:
        self.thread.start()
        held: list[bytearray] = []
        try:
            while True:
                for b in held:
                    self.free.put(b)
                done, item, held = self.items.get()
                if done:
                    if item is not None:
                        raise item
                    return
                yield item
        finally:
            self.stop.set()
            self.thread.join()
