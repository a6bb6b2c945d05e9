"""The environment the benchmarks run fastscan's command line in: the one of an installed package.

An installed package's modules run from cached bytecode. This machine sets PYTHONDONTWRITEBYTECODE,
under which every run of the command would compile fastscan's modules from source again (20 ms of
its start); so the benchmarks compile them once and run the command without that variable.
"""

from __future__ import annotations

import compileall
import os
from pathlib import Path

import fastscan


def env(**extra: str) -> dict[str, str]:
    """This process's environment without PYTHONDONTWRITEBYTECODE, plus `extra`; the package's
    bytecode compiled (once, like an install does)."""
    compileall.compile_dir(Path(fastscan.__file__).parent, quiet=1)
    out = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out.update(extra)
    return out
