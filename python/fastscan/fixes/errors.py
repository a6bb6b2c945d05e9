"""The one error type fixes raise: its message names the file and the problem."""


class FixError(Exception):
    """A fix could not be done; the message says which file and why. Nothing was written."""
