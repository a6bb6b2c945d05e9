"""A verified backup copy of a file, made before `fix --in-place` touches it (the core copies and checks)."""

from __future__ import annotations

from pathlib import Path

from fastscan import _core
from fastscan.fixes.errors import FixError


def backup(src: Path, folder: Path, *, overwrite: bool = False) -> Path:
    """Copies `src` into `folder` (same name, mode and times) through a fsynced temporary file that the
    core verifies by BLAKE3 before naming it; FixError naming the problem when no backup was made."""
    try:
        return Path(_core.backup_file(str(src), str(folder), overwrite=overwrite))
    except (ValueError, OSError) as e:
        raise FixError(str(e)) from None
