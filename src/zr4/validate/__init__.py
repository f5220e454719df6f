"""`zr4 validate`: prove a rendered build context will build and run, without a Docker engine.

Each check is a small function over a ``BuildContext`` returning a ``CheckResult``; the runner
runs them in order and lays the results out as a table or JSON.
"""

from zr4.validate.context import BuildContext
from zr4.validate.model import CheckResult, Finding, Options
from zr4.validate.runner import (
    CHECK_IDS,
    Report,
    format_json,
    format_table,
    validate_context,
    validate_directory,
    validate_profile,
)

__all__ = [
    "CHECK_IDS",
    "BuildContext",
    "CheckResult",
    "Finding",
    "Options",
    "Report",
    "format_json",
    "format_table",
    "validate_context",
    "validate_directory",
    "validate_profile",
]
