"""An input model file opened for a fix: its tensor table as the core judges it (the core reads its bytes)."""

from __future__ import annotations

import os
from pathlib import Path

from fastscan import _core
from fastscan.fixes.errors import FixError


class Source:
    """One input file: `table` (from the Rust core) and `by_name`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.table = _core.read_tensors(str(self.path))
        except (ValueError, OSError) as e:
            raise FixError(str(e)) from None
        self.size = self.table["size"]
        self.tensors: list[dict] = self.table["tensors"]
        self.by_name = {t["name"]: t for t in self.tensors}
        for t in self.tensors:
            if t["start"] + t["span"] > self.size:
                raise FixError(
                    f"{self.path}: truncated: tensor {t['name']} needs bytes up to "
                    f"{t['start'] + t['span']}, the file has {self.size}"
                )

    def close(self) -> None:
        """Nothing to release: the table is plain data (kept so commands read as `with Source(...)`)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def unaccounted(self) -> int:
        """Bytes of a safetensors file that belong to no tensor (gaps, trailing), as the core counts them."""
        return self.table["unaccounted_bytes"]

    def has_finding(self, check: str) -> bool:
        """True when the core reports `check` on this file (header-level checks)."""
        return any(f["check"] == check for f in self.table["findings"])
