"""The plan as text: a table with a bar per component against the card, then the decisions."""

from __future__ import annotations

from zr4.core.planner.formulas import GIB_MIB
from zr4.core.planner.result import PHASE_LABELS, TuningPlan

BAR_WIDTH = 30
_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(mib: int, card_mib: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``mib`` against ``card_mib``; past the card it ends in ``!``."""
    if card_mib <= 0:
        return ""
    cells = min(mib / card_mib, 1.0) * width
    full = int(cells)
    partial = _EIGHTHS[int((cells - full) * 8)] if full < width else ""
    text = ("█" * full + partial.strip()).ljust(width, "·")
    return text + ("!" if mib > card_mib else "▕")


def format_plan(result: TuningPlan) -> str:
    """The plan as a table with a bar per component against the card, then the decisions."""
    w = result.workload
    lines: list[str] = []
    card = result.usable_mib
    lines.append(
        f"{result.gpu_name}: {result.card_mib:,} MiB"
        + (f" ({result.usable_mib:,} MiB free)" if result.usable_mib != result.card_mib else "")
        + f", tier {result.tier}"
    )
    lines.append(
        f"workload: {w.width}×{w.height}, {w.frames} frames ({w.latent_frames} latent), {w.steps} steps, "
        f"{w.tokens:,} tokens; model {result.variant}{' ' + result.gguf_level if result.gguf_level else ''}"
    )
    if result.items:
        lines.append("")
        name_width = max(len(item.label) for item in result.items)
        lines.append(f"{'component'.ljust(name_width)}  {'phase':<20} {'MiB':>7}  vs {card:,} MiB")
        for item in result.items:
            lines.append(
                f"{item.label.ljust(name_width)}  {PHASE_LABELS[item.phase]:<20} {item.mib:>7,}  {bar(item.mib, card)}"
            )
            lines.append(f"{''.ljust(name_width)}    = {item.formula} [{item.source}]")
        lines.append("")
        lines.append(
            "on the card at once, per phase"
            + (" (full: every model stays loaded)" if result.memory_mode == "full" else "")
            + ":"
        )
        for phase, mib in result.phase_mib.items():
            mark = "  ← peak" if phase == result.peak_phase else ""
            share = f"{mib / card:6.1%}" if card else ""
            lines.append(f"  {PHASE_LABELS[phase]:<22} {mib:>7,} MiB  {bar(mib, card)} {share}{mark}")
        ram = (
            f" of {result.host_ram_mib / GIB_MIB:.1f} GiB"
            if result.host_ram_mib is not None
            else " (host RAM not given)"
        )
        lines.append(f"  host RAM needed         {result.host_ram_needed_mib / GIB_MIB:7.1f} GiB{ram}")
        reserve = result.reserve_mib
        if result.fits and card:
            # Why say it: the peak's share of the card looks thin; what is actually left is the reserve
            # plus the rest, on top of terms measured as upper bounds (bench/results/sampler.md).
            left = card - result.peak_mib + reserve
            lines.append(
                f"  left free at the peak   {left:>7,} MiB  ComfyUI's {reserve:,} MiB reserve + "
                f"{card - result.peak_mib:,} MiB"
            )
    lines.append("")
    lines.append("decisions:")
    for decision in result.decisions:
        lines.append(f"  {decision.name:<30} {decision.value:<24} {decision.why}")
    lines.append("")
    lines.append(f"ComfyUI arguments: {' '.join(result.comfyui_args) or '(none)'}")
    for warning in result.warnings:
        lines.append(f"warning: {warning}")
    if result.error:
        lines.append(f"error: {result.error}")
        for alternative in result.alternatives:
            lines.append(f"  instead: {alternative}")
    return "\n".join(lines) + "\n"
