"""Run the checks over a build context and lay the results out as a table or JSON."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zr4.validate.check_budget import check_budget
from zr4.validate.check_build import check_build
from zr4.validate.check_compose import check_compose
from zr4.validate.check_context import check_context
from zr4.validate.check_dockerfile import check_parse, check_stages
from zr4.validate.check_flags import check_flags
from zr4.validate.check_lint import check_hadolint, check_shellcheck
from zr4.validate.check_pins import check_pins
from zr4.validate.check_resolve import TITLE as RESOLVE_TITLE
from zr4.validate.check_resolve import check_resolve
from zr4.validate.check_secrets import check_secrets
from zr4.validate.check_workflow import check_workflows
from zr4.validate.context import BuildContext, named_contexts_from_compose
from zr4.validate.model import CheckResult, Finding, Options, skipped

Check = Callable[[BuildContext], CheckResult]

# The static checks, in the order of the issue (1-11); 12 and 13 take options.
STATIC_CHECKS: tuple[tuple[str, Check], ...] = (
    ("parse", check_parse),
    ("stages", check_stages),
    ("context", check_context),
    ("hadolint", check_hadolint),
    ("shellcheck", check_shellcheck),
    ("compose", check_compose),
    ("secrets", check_secrets),
    ("pins", check_pins),
    ("flags", check_flags),
    ("workflow", check_workflows),
    ("budget", check_budget),
)
CHECK_IDS = (*(name for name, _ in STATIC_CHECKS), "resolve", "build")


@dataclass(frozen=True)
class Report:
    """Every check's result for one context."""

    context: str
    profile: str | None
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return not any(result.failed for result in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def result(self, check: str) -> CheckResult:
        return next(r for r in self.results if r.check == check)

    def to_dict(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "profile": self.profile,
            "ok": self.ok,
            "checks": [
                {
                    "check": r.check,
                    "title": r.title,
                    "status": r.status,
                    "seconds": round(r.seconds, 3),
                    "findings": [{"file": f.file, "line": f.line, "message": f.message} for f in r.findings],
                    "notes": list(r.notes),
                }
                for r in self.results
            ],
        }


def _timed(name: str, check: Check, context: BuildContext) -> CheckResult:
    started = time.perf_counter()
    try:
        result = check(context)
    except Exception as error:  # a crashing check is a failed check with its reason, not a traceback
        result = CheckResult(name, name, "fail", (Finding(f"the check itself failed: {error!r}"),))
    return CheckResult(
        result.check,
        result.title,
        result.status,
        result.findings,
        result.notes,
        time.perf_counter() - started,
    )


def validate_context(
    context: BuildContext, options: Options | None = None, only: Sequence[str] = ()
) -> Report:
    """Run every check (or ``only`` those) over ``context``."""
    options = options or Options()
    wanted = set(only) or set(CHECK_IDS)
    results = [_timed(name, check, context) for name, check in STATIC_CHECKS if name in wanted]
    if "resolve" in wanted:
        if options.resolve:
            results.append(_timed("resolve", lambda c: check_resolve(c, options.resolve_timeout_s), context))
        else:
            results.append(skipped("resolve", RESOLVE_TITLE, "needs the package index: run with --resolve"))
    if "build" in wanted:
        if options.build:
            results.append(_timed("build", check_build, context))
        else:
            from zr4.validate.check_build import TITLE as BUILD_TITLE

            results.append(skipped("build", BUILD_TITLE, "--no-build given"))
    profile, _ = context.profile
    return Report(str(context.root), profile.name if profile is not None else None, tuple(results))


def validate_directory(
    directory: Path,
    options: Options | None = None,
    named_contexts: dict[str, Path] | None = None,
    only: Sequence[str] = (),
) -> Report:
    """Check an existing context; named contexts default to the compose file's additional_contexts."""
    context = BuildContext(directory.resolve())
    context.named_contexts = (
        dict(named_contexts) if named_contexts is not None else named_contexts_from_compose(context)
    )
    return validate_context(context, options, only)


def validate_profile(
    profile_ref: str,
    overrides: Sequence[str] = (),
    options: Options | None = None,
    named_contexts: dict[str, Path] | None = None,
    only: Sequence[str] = (),
) -> Report:
    """Render a profile into a temporary directory and check that (it needs no named build context)."""
    from zr4.profile import load_profile
    from zr4.render import render_files, write_context

    profile = load_profile(profile_ref, overrides)
    files = render_files(profile)
    with tempfile.TemporaryDirectory(prefix=f"zr4-validate-{profile.name}-") as folder:
        out = Path(folder) / "docker"
        write_context(files, out)
        context = BuildContext(out)
        if named_contexts is not None:
            context.named_contexts = dict(named_contexts)
        report = validate_context(context, options, only)
    return Report(f"profile {profile.name}, rendered to a temporary folder", report.profile, report.results)


# ---- presentation ------------------------------------------------------------------------------

_MARK = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}


def format_table(report: Report, verbose: bool = False) -> str:
    """The human table: one row per check, then one line per finding."""
    width = max(len(r.title) for r in report.results) if report.results else 10
    profile = (
        f" (profile {report.profile})" if report.profile and report.profile not in report.context else ""
    )
    lines = [f"zr4 validate: {report.context}{profile}"]
    lines.append(f"  {'#':>2}  {'check':<10}  {'result':<6}  {'what':<{width}}  time")
    for number, result in enumerate(report.results, start=1):
        lines.append(
            f"  {number:>2}  {result.check:<10}  {_MARK[result.status]:<6}  {result.title:<{width}}  "
            f"{result.seconds:5.2f}s"
        )
        for finding in result.findings:
            lines.append(f"        - {finding}")
        if result.status == "skip" or verbose:
            lines.extend(f"        · {note}" for note in result.notes)
    failed = [r.check for r in report.results if r.failed]
    lines.append(
        f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'} "
        f"({sum(r.status == 'pass' for r in report.results)} passed, {len(failed)} failed, "
        f"{sum(r.status == 'skip' for r in report.results)} skipped)"
    )
    return "\n".join(lines)


def format_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2)
