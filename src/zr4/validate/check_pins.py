"""Check 8: every package install is pinned and every failure fails the build.

- pip / uv pip / conda installs take a lock from the context (`-r <lock>`, each line `name==version`,
  with `--hash` lines when installed with `--require-hashes`), an exact pin (`name==1.2.3`), a
  wheel URL or a local artefact built in an earlier stage. `xformers>=0.0.28` or a requirements
  file fetched with the sources (ComfyUI's own, all `>=`) is not a pin (an unpinned xformers pulls a newer torch).
- Git sources are 40-hex commits: a `git clone` must be followed by a checkout of a commit, a
  `git fetch` names a commit, `git+https://...@<ref>` and `ADD <repo>.git#<ref>` use a commit.
- No install failure is swallowed: no `|| ...` after an install, no `2>/dev/null` on one.
- `ADD <url>` carries `--checksum`.
OS packages (`apt-get install`) are out of scope here: the pinned base image fixes the distribution
release, whose archive drops superseded versions, so exact apt pins break rebuilds (hadolint DL3008
is ignored for the same reason, see `.hadolint.yaml`).
"""

from __future__ import annotations

import posixpath
import re

from zr4.validate.context import BuildContext
from zr4.validate.dockerfile_model import Instruction
from zr4.validate.model import CheckResult, Finding, outcome
from zr4.validate.shell import INSTALL_COMMAND, SimpleCommand, split_commands

TITLE = "installs pinned, git at commits, failures not swallowed"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
EXACT_PIN = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9_,.\s-]+\])?\s*===?\s*[A-Za-z0-9_.!+*-]+\s*(;.*)?$"
)
_DIRECT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*@\s*(\S+)")
_SILENCED = re.compile(r"(2>\s*/dev/null|&>\s*/dev/null|>\s*/dev/null\s+2>&1)")
# pip / uv pip options that take a value (pip `install --help`, uv `pip install --help`).
_VALUE_OPTIONS = {
    "-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url", "-f",
    "--find-links", "-t", "--target", "--prefix", "--root", "--python", "-p", "-w", "--wheel-dir",
    "--platform", "--python-version", "--implementation", "--abi", "--no-binary", "--only-binary",
    "--cache-dir", "--src", "--upgrade-strategy", "--override", "--overrides", "--exclude-newer",
    "--index-strategy", "--keyring-provider", "--config-settings", "-C", "--build-constraint", "-b",
    "--group", "--extra", "--python-platform", "--link-mode", "--resolution", "--prerelease",
    "--torch-backend", "-o", "--output-file", "--index", "--default-index", "--progress-bar",
    "--log", "--report", "--trusted-host", "--dest", "-d", "--channel", "-n", "--name",
}  # fmt: skip


def _copied_files(context: BuildContext) -> dict[str, str]:
    """Image path -> context path for every plain COPY/ADD of a single context file."""
    mapping: dict[str, str] = {}
    for instruction in context.instructions("COPY", "ADD"):
        if instruction.flag("from") is not None or len(instruction.args) < 2:
            continue
        dest = instruction.args[-1]
        for source in instruction.args[:-1]:
            target = posixpath.join(dest, posixpath.basename(source)) if dest.endswith("/") else dest
            mapping[posixpath.normpath(target)] = source.lstrip("/")
    return mapping


def lock_problems(text: str, require_hashes: bool) -> list[tuple[int, str]]:
    """(line, problem) for each requirement of a lock file that is not an exact pin."""
    problems: list[tuple[int, str]] = []
    logical: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append((start, pending.strip()))
        pending = ""
    for number, line in logical:
        if line.startswith("-"):
            continue  # --index-url, --extra-index-url, --find-links...
        requirement = line.split(" --hash", 1)[0].strip()
        if not (EXACT_PIN.match(requirement) or _direct_ok(requirement)):
            problems.append((number, f"{requirement!r} is not an exact pin (name==version)"))
        elif require_hashes and "--hash=" not in line:
            problems.append((number, f"{requirement!r} has no --hash, which --require-hashes needs"))
    return problems


def _direct_ok(requirement: str) -> bool:
    match = _DIRECT_REF.match(requirement)
    return bool(match) and _url_problem(match.group(2)) is None if match else False


def _url_problem(url: str) -> str | None:
    if url.startswith("git+"):
        ref = (
            url.rsplit("@", 1)[1].split("#")[0]
            if url.count("@") >= 1 and "@" in url.split("://", 1)[-1]
            else ""
        )
        if not COMMIT.match(ref):
            return f"{url} installs a git source without a 40-hex commit (write ...@<commit>)"
        return None
    name = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
    if name.endswith(".whl") or re.search(r"-[0-9][^/]*\.(tar\.gz|zip)$", name):
        return None
    return f"{url} is not a versioned wheel or archive; pin an exact file"


def _requirement_problem(spec: str) -> str | None:
    if "://" in spec:
        if _DIRECT_REF.match(spec):
            match = _DIRECT_REF.match(spec)
            assert match is not None
            return _url_problem(match.group(2))
        return _url_problem(spec)
    if (
        spec.startswith(("/", "./", "../", "$", "~"))
        or spec in (".", "..")
        or spec.endswith((".whl", ".tar.gz"))
    ):
        return None  # a local artefact: a wheel built in an earlier stage, or a source tree
    if EXACT_PIN.match(spec):
        return None
    return f"{spec!r} is not pinned; write name==version or add it to the lock"


def _install_problems(command: SimpleCommand, copied: dict[str, str], context: BuildContext) -> list[str]:
    words = command.words
    match = INSTALL_COMMAND.search(command.text)
    if match is None:
        return []
    # Skip to the words after the subcommand.
    try:
        index = words.index(match.group(4)) + 1
    except ValueError:
        return []
    problems: list[str] = []
    require_hashes = "--require-hashes" in words
    i = index
    while i < len(words):
        word = words[i]
        if word in ("-r", "--requirement") and i + 1 < len(words):
            problems.extend(_lock_reference_problems(words[i + 1], require_hashes, copied, context))
            i += 2
            continue
        if word.startswith("--requirement=") or (word.startswith("-r") and len(word) > 2):
            path = word.split("=", 1)[1] if "=" in word else word[2:]
            problems.extend(_lock_reference_problems(path, require_hashes, copied, context))
        elif word in ("-e", "--editable") and i + 1 < len(words):
            problem = _requirement_problem(words[i + 1])
            if problem:
                problems.append(problem)
            i += 2
            continue
        elif word in _VALUE_OPTIONS:
            i += 2
            continue
        elif re.match(r"^[0-9&]*[<>]", word):
            i += 2 if re.fullmatch(r"[0-9&]*[<>]{1,2}", word) else 1  # `2> file` vs `2>/dev/null`
            continue
        elif not word.startswith("-"):
            problem = _requirement_problem(word)
            if problem:
                problems.append(problem)
        i += 1
    return problems


def _lock_reference_problems(
    path: str, require_hashes: bool, copied: dict[str, str], context: BuildContext
) -> list[str]:
    source = copied.get(posixpath.normpath(path))
    if source is None:
        return [
            f"-r {path} is not a lock copied from this build context (e.g. a project's own requirements, "
            f"usually `>=`); install from the lock instead"
        ]
    text = context.read(source)
    if text is None:
        return []  # missing file: check 3 reports it
    return [f"{source} line {line}: {problem}" for line, problem in lock_problems(text, require_hashes)]


# git clone / fetch options that take a separate value (git-clone(1), git-fetch(1)).
_GIT_VALUE_OPTIONS = {
    "--depth", "-b", "--branch", "-o", "--origin", "--filter", "-j", "--jobs", "--reference",
    "--separate-git-dir", "-c", "--config", "--shallow-since", "--shallow-exclude", "--template",
    "-u", "--upload-pack", "--deepen", "--negotiation-tip", "--server-option", "--recurse-submodules-default",
}  # fmt: skip


def git_positionals(args: list[str]) -> list[str]:
    found: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _GIT_VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            found.append(arg)
    return found


def _git_problems(commands: list[SimpleCommand]) -> list[str]:
    problems: list[str] = []
    clones: list[str] = []
    checked_out = False
    fetched_commit = False
    for command in commands:
        words = command.words
        if "git" not in words:
            continue
        args = words[words.index("git") + 1 :]
        while args and args[0] == "-C" and len(args) > 1:
            args = args[2:]
        if not args:
            continue
        verb, rest = args[0], git_positionals(args[1:])
        if verb == "clone" and rest:
            clones.append(rest[0])
        elif verb == "fetch" and rest:
            ref = rest[-1]
            if len(rest) >= 2 and not COMMIT.match(ref):
                problems.append(f"`git fetch ... {ref}` fetches a branch or tag; fetch a 40-hex commit")
            fetched_commit = fetched_commit or bool(COMMIT.match(ref))
        elif verb in ("checkout", "reset", "switch") and rest:
            ref = rest[-1]
            if COMMIT.match(ref) or (ref == "FETCH_HEAD" and fetched_commit):
                checked_out = True
            else:
                problems.append(f"`git {verb} {ref}` is not a 40-hex commit")
    if clones and not checked_out:
        problems.extend(
            f"`git clone {url}` takes whatever the default branch holds today; check out a 40-hex commit"
            for url in clones
        )
    return problems


def _swallow_problems(commands: list[SimpleCommand]) -> list[str]:
    problems: list[str] = []
    chain_installs: list[str] = []
    for command in commands:
        if INSTALL_COMMAND.search(command.text):
            chain_installs.append(command.text)
            if _SILENCED.search(command.text):
                problems.append(
                    f"`{_short(command.text)}` sends its errors to /dev/null; let a failed install fail the build"
                )
        if command.operator == "||" and chain_installs:
            problems.append(
                f"`{_short(chain_installs[-1])} || ...` turns a failed install into a successful build of a "
                f"broken image; remove the `||` fallback"
            )
        if command.operator in ("||", ";", "\n", "&", ""):
            chain_installs = []
    return problems


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _run_findings(instruction: Instruction, copied: dict[str, str], context: BuildContext) -> list[str]:
    scripts = [instruction.shell_text] if not instruction.json else [" ".join(instruction.args)]
    scripts += list(instruction.heredocs)
    problems: list[str] = []
    for script in scripts:
        commands = split_commands(script)
        for command in commands:
            problems.extend(_install_problems(command, copied, context))
        problems.extend(_git_problems(commands))
        problems.extend(_swallow_problems(commands))
    return problems


def _add_findings(instruction: Instruction) -> list[str]:
    problems: list[str] = []
    for source in instruction.args[:-1]:
        if source.endswith(".git") or ".git#" in source or source.startswith("git@"):
            ref = source.split("#", 1)[1].split(":", 1)[0] if "#" in source else ""
            if not COMMIT.match(ref) and not instruction.flag("checksum"):
                problems.append(
                    f"ADD {source} fetches a git ref that is not a 40-hex commit; use <repo>.git#<commit>"
                )
        elif re.match(r"^https?://", source) and not instruction.flag("checksum"):
            problems.append(f"ADD {source} downloads whatever the URL serves; add --checksum=sha256:<digest>")
    return problems


def check_pins(context: BuildContext) -> CheckResult:
    """Check 8."""
    file = context.dockerfile_name
    if context.model is None:
        return outcome("pins", TITLE, [Finding("the Dockerfile does not parse (see check 1)", file)])
    copied = _copied_files(context)
    findings: list[Finding] = []
    for instruction in context.instructions("RUN", "ADD"):
        problems = (
            _run_findings(instruction, copied, context)
            if instruction.cmd == "RUN"
            else _add_findings(instruction)
        )
        findings.extend(Finding(problem, file, instruction.line) for problem in dict.fromkeys(problems))
    for script in context.shell_scripts:
        text = context.read(script) or ""
        commands = split_commands(text)
        problems = [p for c in commands for p in _install_problems(c, {}, context)]
        problems += _swallow_problems(commands) + _git_problems(commands)
        findings.extend(Finding(problem, script) for problem in dict.fromkeys(problems))
    return outcome("pins", TITLE, findings)
