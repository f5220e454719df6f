"""The result types every check returns, and the build context they look at."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True)
class Finding:
    """One problem: where it is and one actionable sentence (what is wrong, how to fix it)."""

    message: str
    file: str | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        if self.file and self.line:
            return f"{self.file}:{self.line}"
        return self.file or ""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. ``notes`` are facts worth showing that are not failures."""

    check: str
    title: str
    status: Status
    findings: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def passed(check: str, title: str, *notes: str) -> CheckResult:
    return CheckResult(check, title, "pass", (), tuple(notes))


def skipped(check: str, title: str, reason: str) -> CheckResult:
    return CheckResult(check, title, "skip", (), (reason,))


def outcome(check: str, title: str, findings: list[Finding], notes: list[str] | None = None) -> CheckResult:
    """Pass when there are no findings, fail otherwise."""
    return CheckResult(check, title, "fail" if findings else "pass", tuple(findings), tuple(notes or ()))


@dataclass
class Options:
    """What the caller asked for beyond the static checks."""

    resolve: bool = False
    build: bool = True
    resolve_timeout_s: float = 240.0
    extra: dict[str, str] = field(default_factory=dict)
