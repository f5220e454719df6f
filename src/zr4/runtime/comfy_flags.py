"""Which ComfyUI command-line flags a pinned ComfyUI version accepts, and checking a user's flags.

The accepted sets are data (``data/comfyui_flags.yaml``, one entry per ComfyUI version, a source for
every flag). ComfyUI parses its arguments with argparse, which exits on an unknown flag, a missing or
mistyped value, or two flags of one mutually exclusive group; in a container that exit is a
crash-loop. So a user's ``COMFYUI_ARGS`` are split into what ComfyUI will take and what it would
reject, and only the first part is passed on.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from zr4.paths import data_dir

Takes = Literal["none", "one", "optional", "many", "any"]
_TAKES: tuple[str, ...] = ("none", "one", "optional", "many", "any")


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


def flags_file() -> Path:
    return data_dir() / "comfyui_flags.yaml"


@cache
def _load(path: Path) -> Mapping[str, FlagSet]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise FlagDataError(f"cannot read {path}: {error}") from None
    versions = document.get("versions") if isinstance(document, dict) else None
    if not isinstance(versions, dict):
        raise FlagDataError(f"{path}: no 'versions' mapping")
    return {str(version): _parse_version(path, str(version), entry) for version, entry in versions.items()}


def _parse_version(path: Path, version: str, entry: Any) -> FlagSet:
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
        if value_type not in (None, "int", "float"):
            raise FlagDataError(f"{where}: type must be int or float")
        flags[name] = FlagSpec(
            name=name,
            takes=takes,
            value_type=value_type,
            choices=tuple(str(choice) for choice in spec.get("choices", ())),
            group=spec.get("group"),
            source=str(spec.get("source", "")),
            emit=bool(spec.get("emit", False)),
            refuse=spec.get("refuse"),
        )
    return FlagSet(version=version, commit=str(entry.get("commit", "")), flags=flags)


def known_versions(path: Path | None = None) -> tuple[str, ...]:
    return tuple(_load(path or flags_file()))


def flag_set(version: str, path: Path | None = None) -> FlagSet:
    """The accepted flags of ComfyUI ``version`` (e.g. ``"v0.7.0"``)."""
    versions = _load(path or flags_file())
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
) -> ArgSplit:
    """Split ``args`` into the tokens ComfyUI ``flags.version`` accepts and those it would reject.

    ``owned`` flags are set by zr4 itself (e.g. ``--listen``, ``--port``): reported, not passed.
    ``taken_groups`` maps an exclusive group to the flag already chosen for it; a second flag of
    that group is rejected, as is a second flag of a group within ``args`` (the first one wins).
    """
    tokens = tokenize(args)
    owned_set = set(owned)
    groups: dict[str, str] = dict(taken_groups or {})
    accepted: list[str] = []
    by_flag: dict[str, tuple[str, ...]] = {}
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
        if problem is not None:
            rejected.append(RejectedArg(group_tokens, problem))
            continue
        if spec is not None and spec.group is not None:
            groups[spec.group] = name
        accepted.extend(group_tokens)
        by_flag[name] = group_tokens
    return ArgSplit(tuple(accepted), tuple(rejected), by_flag)


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
    planned: Sequence[str], user: str | Sequence[str] | None, flags: FlagSet, owned: Iterable[str] = ()
) -> tuple[tuple[str, ...], ArgSplit, tuple[str, ...]]:
    """The planner's arguments combined with the user's accepted ones.

    The user's choice wins: a planned flag whose exclusive group (or the flag itself) the user set
    is dropped. Returns (final arguments, the user's split, planned flags dropped for the user's).
    """
    user_split = split_args(user, flags, owned=owned)
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
