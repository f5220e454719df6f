"""`zr4 profiles` and `zr4 show`: what is bundled and what a profile resolves to."""

from __future__ import annotations

import typer
import yaml

from zr4.cli.common import SET_OPTION
from zr4.profile import bundled_profile_names, load_profile


def list_profiles(
    names_only: bool = typer.Option(
        False, "--names", help="Print only the names, one per line (for scripts)."
    ),
) -> None:
    """List the bundled profiles as a table."""
    if names_only:
        typer.echo("\n".join(bundled_profile_names()))
        return
    rows = [("PROFILE", "GPU", "VRAM", "SM", "VARIANT", "TORCH", "POSE")]
    for name in bundled_profile_names():
        profile = load_profile(name)
        level = f" {profile.model.gguf_level}" if profile.model.variant == "gguf" else ""
        rows.append(
            (
                name,
                profile.gpu.name,
                f"{profile.gpu.vram_gib:g} GiB",
                profile.gpu.compute_capability,
                profile.model.variant + level,
                f"{profile.stack.torch}+{profile.stack.torch_cuda}",
                profile.features.pose_backend,
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def show(
    profile: str = typer.Argument("4080super", help="Bundled profile name or YAML path."),
    overrides: list[str] = SET_OPTION,
) -> None:
    """Print the fully resolved profile (after extends: and --set) as YAML."""
    from zr4.render.context import runpod_fields

    resolved = load_profile(profile, overrides)
    document = resolved.model_dump(mode="json")
    # 0 in a profile means "size it": show the sizes the RunPod template gets, not the 0.
    sized = runpod_fields(resolved)
    for key in ("container_disk_gb", "volume_gb"):
        document["runpod"][key] = sized[key]
    typer.echo(yaml.safe_dump(document, sort_keys=False).rstrip())


def register(app: typer.Typer) -> None:
    app.command("profiles")(list_profiles)
    app.command("show")(show)
