"""`zr4 schema`: write or check the committed JSON Schema of the profile."""

from __future__ import annotations

import typer

from zr4.errors import Zr4Error
from zr4.profile.schema import profile_json_schema, schema_path


def schema(
    check: bool = typer.Option(False, "--check", help="Exit 1 if the committed schema is stale."),
) -> None:
    """Regenerate profiles/profile.schema.json from the profile models."""
    path = schema_path()
    fresh = profile_json_schema()
    if check:
        if not path.is_file() or path.read_text(encoding="utf-8") != fresh:
            raise Zr4Error(f"{path} does not match the profile models; run `zr4 schema` and commit it")
        typer.echo(f"{path}: up to date")
        return
    path.write_text(fresh, encoding="utf-8")
    typer.echo(f"wrote {path}")
