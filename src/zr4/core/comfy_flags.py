"""Which ComfyUI command-line flags a pinned ComfyUI version accepts, and checking a user's flags.

The accepted sets are data: ``data/comfyui_flags.yaml`` (generated from each version's
``comfy/cli_args.py`` by ``data/gen_comfyui_flags.py``) and zr4's rules on top of them,
``data/comfyui_flag_policy.yaml``. ComfyUI parses its arguments with argparse, which exits on an
unknown flag, a missing or mistyped value, a missing directory, or two flags of one mutually
exclusive group; some accepted flags still make it exit at start (a missing package, a memory flag
without a GPU, a missing file). In a container that exit is a crash-loop. So a user's
``COMFYUI_ARGS`` are split into what ComfyUI will take and what it would die on, and only the first
part is passed on, with a warning for the rest.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from zr4.core.documents import read_document
from zr4.paths import data_dir

Takes = Literal["none", "one", "optional", "many", "any"]
_TAKES: tuple[str, ...] = ("none", "one", "optional", "many", "any")
_VALUE_TYPES = (None, "int", "float", "directory")
_PATH_KINDS = ("file", "directory")
# Set by `zr4 start` from its own settings (COMFYUI_PORT, OUTPUT_DIR ...): a user's copy is reported, not passed.
ZR4_OWNED_FLAGS = ("--listen", "--port", "--output-directory")


class FlagDataError(ValueError):
    """``comfyui_flags.yaml`` is malformed or lacks the requested version."""


@dataclass(frozen=True)
class FlagSpec:
    """One accepted flag: how many values it takes and which values are valid."""

    name: str
    takes: Takes = "none"
    value_type: str | None = None
    choices: tuple[str, ...] = ()
    group: str | None = None
    source: str = ""
    emit: bool = False
    refuse: str | None = None
    package: str | None = None  # import name ComfyUI needs for this flag, else it exits
    needs_gpu: bool = False  # takes ComfyUI off the CPU: refused where the plan is --cpu
    path: str | None = None  # "file" / "directory": the value must exist when ComfyUI starts

    def value_problem(self, value: str) -> str | None:
        """Why ``value`` is not valid for this flag, or None."""
        if self.choices and value not in self.choices:
            return f"{self.name} takes one of {', '.join(self.choices)}, not {value!r}"
        if self.value_type == "int":
            try:
                int(value)
            except ValueError:
                return f"{self.name} needs a whole number, not {value!r}"
        if self.value_type == "float":
            try:
                float(value)
            except ValueError:
                return f"{self.name} needs a number, not {value!r}"
        return None


@dataclass(frozen=True)
class FlagSet:
    """The flags one ComfyUI version accepts."""

    version: str
    commit: str
    flags: Mapping[str, FlagSpec]

    def __contains__(self, name: object) -> bool:
        return name in self.flags

    @property
    def emittable(self) -> frozenset[str]:
        """Flags the planner may choose on its own."""
        return frozenset(name for name, spec in self.flags.items() if spec.emit)


@dataclass(frozen=True)
class RejectedArg:
    """Tokens of a user's arguments that are not passed to ComfyUI, and why."""

    tokens: tuple[str, ...]
    reason: str

    def __str__(self) -> str:
        return f"{' '.join(self.tokens)}: {self.reason}"


@dataclass(frozen=True)
class ArgSplit:
    """A user's arguments split into what ComfyUI accepts and what it would reject."""

    accepted: tuple[str, ...] = ()
    rejected: tuple[RejectedArg, ...] = ()
    # flag name -> the tokens of that flag (flag and its values) in ``accepted``
    by_flag: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # (flag name, tokens) of every accepted flag in order, repeats included (``accepted`` grouped)
    items: tuple[tuple[str, tuple[str, ...]], ...] = ()


def flags_file() -> Path:
    return data_dir() / "comfyui_flags.yaml"


def policy_file() -> Path:
    return data_dir() / "comfyui_flag_policy.yaml"


@dataclass(frozen=True)
class _Policy:
    emit: frozenset[str] = frozenset()
    refuse: Mapping[str, str] = field(default_factory=dict)
    package: Mapping[str, str] = field(default_factory=dict)
    needs_gpu: frozenset[str] = frozenset()
    paths: Mapping[str, str] = field(default_factory=dict)


def _load_policy(path: Path) -> _Policy:
    if not path.is_file():
        return _Policy()
    document = read_document(path, FlagDataError, "yaml") or {}
    if not isinstance(document, dict):
        raise FlagDataError(f"{path}: expected a mapping")
    paths = {str(k): str(v) for k, v in (document.get("paths") or {}).items()}
    bad = sorted(k for k, v in paths.items() if v not in _PATH_KINDS)
    if bad:
        raise FlagDataError(f"{path}: paths.{bad[0]} must be one of {', '.join(_PATH_KINDS)}")
    return _Policy(
        emit=frozenset(str(f) for f in document.get("emit") or ()),
        refuse={str(k): str(v) for k, v in (document.get("refuse") or {}).items()},
        package={str(k): str(v) for k, v in (document.get("needs_package") or {}).items()},
        needs_gpu=frozenset(str(f) for f in document.get("needs_gpu") or ()),
        paths=paths,
    )


@cache
def _load(path: Path, policy_path: Path | None = None) -> Mapping[str, FlagSet]:
    document = read_document(path, FlagDataError, "yaml")
    versions = document.get("versions") if isinstance(document, dict) else None
    if not isinstance(versions, dict):
        raise FlagDataError(f"{path}: no 'versions' mapping")
    policy = _load_policy(policy_path) if policy_path is not None else _Policy()
    return {
        str(version): _parse_version(path, str(version), entry, policy) for version, entry in versions.items()
    }


def _parse_version(path: Path, version: str, entry: Any, policy: _Policy | None = None) -> FlagSet:
    policy = policy or _Policy()
    if not isinstance(entry, dict) or not isinstance(entry.get("flags"), dict):
        raise FlagDataError(f"{path}: versions.{version} needs a 'flags' mapping")
    flags: dict[str, FlagSpec] = {}
    for name, raw in entry["flags"].items():
        where = f"{path}: versions.{version}.flags.{name}"
        if not isinstance(name, str) or not name.startswith("--"):
            raise FlagDataError(f"{where}: a flag name starts with --")
        spec = raw or {}
        takes = spec.get("takes", "none")
        if takes not in _TAKES:
            raise FlagDataError(f"{where}: takes must be one of {', '.join(_TAKES)}")
        value_type = spec.get("type")
        if value_type not in _VALUE_TYPES:
            raise FlagDataError(f"{where}: type must be int, float or directory")
        flags[name] = FlagSpec(
            name=name,
            takes=takes,
            value_type=value_type,
            choices=tuple(str(choice) for choice in spec.get("choices", ())),
            group=spec.get("group"),
            source=str(spec.get("source", entry.get("source", ""))),
            emit=bool(spec.get("emit", name in policy.emit)),
            refuse=spec.get("refuse", policy.refuse.get(name)),
            package=policy.package.get(name),
            needs_gpu=name in policy.needs_gpu,
            path="directory" if value_type == "directory" else policy.paths.get(name),
        )
    return FlagSet(version=version, commit=str(entry.get("commit", "")), flags=flags)


def known_versions(path: Path | None = None) -> tuple[str, ...]:
    return tuple(_load(path or flags_file(), policy_file() if path is None else None))


def flag_set(version: str, path: Path | None = None) -> FlagSet:
    """The accepted flags of ComfyUI ``version`` (e.g. ``"v0.7.0"``), with zr4's policy applied.

    ``path`` reads another table (tests); the policy applies only to the bundled table.
    """
    versions = _load(path or flags_file(), policy_file() if path is None else None)
    if version not in versions:
        raise FlagDataError(
            f"no accepted-flag set for ComfyUI {version} in {path or flags_file()}; "
            f"known: {', '.join(versions)}. Add the version's flags (from its comfy/cli_args.py)."
        )
    return versions[version]


def _is_value(token: str) -> bool:
    """A token argparse would take as a value rather than an option (negative numbers are values)."""
    if not token.startswith("-") or token == "-":
        return True
    try:
        float(token)
    except ValueError:
        return False
    return True


def tokenize(args: str | Sequence[str] | None) -> list[str]:
    """Shell-split a ``COMFYUI_ARGS`` string; a sequence is taken as already split."""
    if args is None:
        return []
    if isinstance(args, str):
        try:
            return shlex.split(args)
        except ValueError:  # unbalanced quotes: split on whitespace, each piece is then checked
            return args.split()
    return list(args)


def split_args(
    args: str | Sequence[str] | None,
    flags: FlagSet,
    owned: Iterable[str] = (),
    taken_groups: Mapping[str, str] | None = None,
    cpu_only: bool = False,
) -> ArgSplit:
    """Split ``args`` into the tokens ComfyUI ``flags.version`` accepts and those it would reject.

    ``owned`` flags are set by zr4 itself (e.g. ``--listen``, ``--port``): reported, not passed.
    ``taken_groups`` maps an exclusive group to the flag already chosen for it; a second flag of
    that group is rejected, as is a second flag of a group within ``args`` (the first one wins).
    ``cpu_only``: there is no GPU (the plan is ``--cpu``), so flags that need one are rejected.
    """
    tokens = tokenize(args)
    owned_set = set(owned)
    groups: dict[str, str] = dict(taken_groups or {})
    accepted: list[str] = []
    by_flag: dict[str, tuple[str, ...]] = {}
    items: list[tuple[str, tuple[str, ...]]] = []
    rejected: list[RejectedArg] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if _is_value(token):
            rejected.append(RejectedArg((token,), "a value with no flag before it"))
            continue
        inline: str | None = None
        name = token
        if "=" in token:
            name, inline = token.split("=", 1)
        values: list[str] = [inline] if inline is not None else []
        spec = flags.flags.get(name)
        if spec is None or spec.takes != "none":
            # an unknown flag's trailing values go with it; a known one takes what its arity allows
            limit = _max_values(spec) - len(values)
            while limit > 0 and index < len(tokens) and _is_value(tokens[index]):
                values.append(tokens[index])
                index += 1
                limit -= 1
        group_tokens = (token, *values[1:]) if inline is not None else (token, *values)
        problem = _problem(spec, name, values, inline is not None, flags.version, owned_set, groups)
        if problem is None and cpu_only and spec is not None and spec.needs_gpu:
            problem = f"{name} needs an NVIDIA GPU and none was found: ComfyUI keeps --cpu"
        if problem is not None:
            rejected.append(RejectedArg(group_tokens, problem))
            continue
        if spec is not None and spec.group is not None:
            groups[spec.group] = name
        accepted.extend(group_tokens)
        by_flag[name] = group_tokens
        items.append((name, group_tokens))
    return ArgSplit(tuple(accepted), tuple(rejected), by_flag, tuple(items))


def _max_values(spec: FlagSpec | None) -> int:
    if spec is None:
        return 1_000_000
    return {"none": 0, "one": 1, "optional": 1, "many": 1_000_000, "any": 1_000_000}[spec.takes]


def _problem(
    spec: FlagSpec | None,
    name: str,
    values: list[str],
    inline: bool,
    version: str,
    owned: set[str],
    groups: Mapping[str, str],
) -> str | None:
    if spec is None:
        return f"ComfyUI {version} has no {name} flag"
    if spec.refuse:
        return spec.refuse
    if name in owned:
        return f"{name} is set by zr4 itself"
    if spec.takes == "none" and inline:
        return f"{name} takes no value"
    if spec.takes in ("one", "many") and not values:
        return f"{name} needs a value"
    for value in values:
        problem = spec.value_problem(value)
        if problem is not None:
            return problem
    if spec.group is not None and spec.group in groups and groups[spec.group] != name:
        return f"{name} cannot be combined with {groups[spec.group]} (ComfyUI allows one of them)"
    return None


def check_emitted(args: Sequence[str], flags: FlagSet) -> None:
    """Raise if the planner's own arguments include a flag outside the emittable set."""
    split = split_args(args, flags)
    if split.rejected:
        raise FlagDataError(
            f"planner produced arguments ComfyUI {flags.version} rejects: {split.rejected[0]}"
        )
    outside = sorted(set(split.by_flag) - flags.emittable)
    if outside:
        raise FlagDataError(f"planner produced flags it may not choose: {', '.join(outside)}")


def merge_args(
    planned: Sequence[str],
    user: str | Sequence[str] | None,
    flags: FlagSet,
    owned: Iterable[str] = (),
    environment: FlagEnvironment | None = None,
) -> tuple[tuple[str, ...], ArgSplit, tuple[str, ...]]:
    """The planner's arguments combined with the user's accepted ones.

    The user's choice wins: a planned flag whose exclusive group (or the flag itself) the user set
    is dropped. One exception: a planned ``--cpu`` means no GPU was found, and a user's memory
    flag (``--lowvram`` ...) would replace it with a mode ComfyUI cannot start in, so that flag is
    rejected instead. Likewise, with ``environment`` (what ComfyUI's machine offers), a user's flag
    it cannot honour is rejected before it replaces anything: ``--use-sage-attention`` without
    sageattention leaves the planned ``--use-pytorch-cross-attention`` in place. (The planned flags
    are the caller's to check, with :func:`check_environment`.) Returns (final arguments, the
    user's split, planned flags dropped for the user's).
    """
    planned_cpu = "--cpu" in tokenize(planned)
    user_split = split_args(user, flags, owned=owned, cpu_only=planned_cpu)
    if environment is not None:
        user_split = _usable_part(user_split, flags, environment)
    user_groups = {
        flags.flags[name].group for name in user_split.by_flag if flags.flags[name].group is not None
    }
    planned_split = split_args(planned, flags)
    final: list[str] = []
    dropped: list[str] = []
    for name, tokens in planned_split.by_flag.items():
        spec = flags.flags[name]
        if name in user_split.by_flag or (spec.group is not None and spec.group in user_groups):
            if user_split.by_flag.get(name) != tokens:  # the same flag asked twice is no override
                dropped.append(name)
            continue
        final.extend(tokens)
    final.extend(user_split.accepted)
    return tuple(final), user_split, tuple(dropped)


# --- what the machine ComfyUI starts on offers ------------------------------------------------


@dataclass(frozen=True)
class FlagEnvironment:
    """What a flag may need from the machine: a Python package in ComfyUI's environment, a path.

    ``has_package(import_name)`` answers for ComfyUI's interpreter (not zr4's own); ``cwd`` is
    ComfyUI's folder, which relative paths are read from.
    """

    has_package: Callable[[str], bool]
    cwd: Path

    @classmethod
    def for_python(cls, python: str | Path, cwd: Path) -> FlagEnvironment:
        return cls(has_package=package_finder(python), cwd=cwd)


def _site_packages(python: Path) -> list[Path]:
    """site-packages folders of the venv ``python`` belongs to (empty when it is not a venv)."""
    for root in (python.parent.parent, python.resolve().parent.parent):
        if (root / "pyvenv.cfg").is_file():
            return sorted(root.glob("lib/python3*/site-packages")) + sorted(
                root.glob("lib64/python3*/site-packages")
            )
    return []


def package_finder(python: str | Path) -> Callable[[str], bool]:
    """``has_package(import_name)`` for interpreter ``python``.

    A venv's site-packages is looked at directly (no interpreter start: this runs on every boot);
    otherwise the interpreter is asked once per name with ``importlib.util.find_spec``, which
    imports nothing.
    """
    path = Path(python)
    folders = _site_packages(path)

    @cache
    def has_package(name: str) -> bool:
        if folders:
            for folder in folders:
                if (folder / name).is_dir() or (folder / f"{name}.py").is_file():
                    return True
                if any(folder.glob(f"{name}.*.so")) or any(folder.glob(f"{name}.*.pyd")):
                    return True
            return False
        import subprocess

        code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({name!r}) else 1)"
        try:
            return subprocess.run([str(path), "-c", code], capture_output=True, timeout=60).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return True  # cannot tell: do not drop a flag on a guess

    return has_package


def _environment_problem(spec: FlagSpec, values: Sequence[str], environment: FlagEnvironment) -> str | None:
    if spec.package is not None and not environment.has_package(spec.package):
        return (
            f"{spec.name} needs the Python package {spec.package!r}, which ComfyUI's environment "
            "does not have (ComfyUI would exit at start)"
        )
    if spec.path is not None:
        for value in values:
            target = Path(value) if Path(value).is_absolute() else environment.cwd / value
            if spec.path == "directory" and not target.is_dir():
                return f"{spec.name} {value}: no such directory (ComfyUI would exit at start)"
            if spec.path == "file" and not target.is_file():
                return f"{spec.name} {value}: no such file (ComfyUI would exit at start)"
            if not os.access(target, os.R_OK):
                return f"{spec.name} {value}: not readable (ComfyUI would exit at start)"
    return None


def _unusable(tokens: tuple[str, ...], spec: FlagSpec, environment: FlagEnvironment) -> RejectedArg | None:
    """Why the machine cannot honour one accepted flag (``tokens``: the flag and its values), or None."""
    values = tokens[1:] if "=" not in tokens[0] else (tokens[0].split("=", 1)[1], *tokens[1:])
    problem = _environment_problem(spec, values, environment)
    return None if problem is None else RejectedArg(tokens, problem)


def _usable_part(split: ArgSplit, flags: FlagSet, environment: FlagEnvironment) -> ArgSplit:
    """``split`` with the accepted flags the machine cannot honour moved to the rejected ones."""
    items: list[tuple[str, tuple[str, ...]]] = []
    rejected = list(split.rejected)
    for name, tokens in split.items:
        unusable = _unusable(tokens, flags.flags[name], environment)
        if unusable is None:
            items.append((name, tokens))
        else:
            rejected.append(unusable)
    accepted = tuple(token for _name, tokens in items for token in tokens)
    return ArgSplit(accepted, tuple(rejected), dict(items), tuple(items))


def check_environment(
    args: Sequence[str], flags: FlagSet, environment: FlagEnvironment
) -> tuple[tuple[str, ...], tuple[RejectedArg, ...]]:
    """Drop the flags that the machine cannot honour; say why for each. Returns (kept, rejected)."""
    split = _usable_part(split_args(args, flags), flags, environment)
    return split.accepted, split.rejected
