"""Just enough shell structure for the checks: simple commands and the operators between them."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# pip / pip3 / python -m pip / uv pip: install, wheel, sync; conda/mamba install.
INSTALL_COMMAND = re.compile(
    r"(^|[\s/])(pip3?|python3?(\.[0-9]+)?\s+-m\s+pip|uv\s+pip|conda|mamba|micromamba)\s+(install|wheel|sync|download)\b"
)


@dataclass(frozen=True)
class SimpleCommand:
    """One command of a list, with the operator that follows it (``&&``, ``||``, ``;``, ``|`` or "")."""

    text: str
    operator: str

    @property
    def words(self) -> list[str]:
        try:
            return shlex.split(self.text, comments=False, posix=True)
        except ValueError:
            return self.text.split()


def split_commands(text: str) -> list[SimpleCommand]:
    """Split a shell command line at unquoted ``&&``, ``||``, ``;``, ``|``, ``&`` and newlines."""
    commands: list[SimpleCommand] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            current.append(char)
            if char == "\\" and quote == '"' and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif char == quote:
                quote = None
            i += 1
            continue
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if (
            char == "#"
            and (not current or current[-1][-1:].isspace())
            and (i == 0 or text[i - 1] in " \t\n;")
        ):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        if char in "'\"":
            quote = char
            current.append(char)
            i += 1
            continue
        two = text[i : i + 2]
        if two in ("&&", "||"):
            commands.append(SimpleCommand("".join(current).strip(), two))
            current = []
            i += 2
            continue
        if char in ";|\n" or (char == "&" and text[max(0, i - 1)] not in "><" and text[i + 1 : i + 2] != ">"):
            commands.append(SimpleCommand("".join(current).strip(), "\n" if char == "\n" else char))
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    commands.append(SimpleCommand("".join(current).strip(), ""))
    return [command for command in commands if command.text]


def commands_of(text: str) -> list[str]:
    return [command.text for command in split_commands(text)]
