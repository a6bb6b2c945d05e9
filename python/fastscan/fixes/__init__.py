"""Fixes that lose nothing: fix, convert, extract and bake-vae, written through a verified temporary file."""

from fastscan.fixes.errors import FixError

__all__ = ["FixError"]
