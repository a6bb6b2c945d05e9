"""Choices shared by several CLI commands."""

from __future__ import annotations

from enum import Enum


class HashMode(str, Enum):
    """Which hashes a scan computes (`--hash`)."""

    none = "none"
    components = "components"
    full = "full"


class FailOn(str, Enum):
    """The lowest severity that makes the exit code 1 (`--fail-on`)."""

    critical = "critical"
    error = "error"
    warning = "warning"
    never = "never"
