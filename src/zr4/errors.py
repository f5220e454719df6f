"""Errors a user can act on.

The CLI prints ``str(error)`` as one red line and exits non-zero; anything that is not a
``Zr4Error`` is a bug and keeps its traceback.
"""

from __future__ import annotations


class Zr4Error(Exception):
    """Base class: the message says what is wrong and how to fix it."""

    exit_code = 1


class UsageError(Zr4Error):
    """The command line itself is wrong."""

    exit_code = 2


class ProfileError(Zr4Error):
    """A profile is malformed or impossible; the message names the file and field path."""


class CompatibilityError(Zr4Error):
    """A profile falls outside the compatibility matrix; the message names the rule."""
