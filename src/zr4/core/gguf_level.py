"""GGUF quantisation levels and the one way zr4 reads a level a user wrote.

The same spellings work everywhere a level is given: a profile (``model.gguf_level``), ``--set
model.gguf_level=...`` and ``STEADYDANCER_GGUF_MODEL`` at run time. Pure data and one function, so
the runtime imports it without Pydantic.
"""

from __future__ import annotations

from collections.abc import Sequence

# Known GGUF quantisation levels for Wan 2.1 14B, lowest quality first.
# Source: MCG-NJU/SteadyDancer-GGUF and city96/Wan2.1-I2V-14B GGUF level names (their Hub file listings).
GGUF_LEVELS = (
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q4_0",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_0",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "Q8_0",
)
# Short spellings, as data/models.yaml's gguf.aliases spells them (docs/reference/environment.md).
SHORT_FORMS = {"Q2": "Q2_K", "Q3": "Q3_K_M", "Q4": "Q4_K_M", "Q5": "Q5_K_M", "Q6": "Q6_K", "Q8": "Q8_0"}


def parse_gguf_level(value: str, known: Sequence[str] = GGUF_LEVELS) -> str | None:
    """``q4_k_m``, ``Q4_K_M``, ``q4`` -> ``Q4_K_M``; ``auto`` -> ``auto``; not in ``known`` -> None."""
    text = value.strip().upper()
    if text == "AUTO":
        return "auto"
    text = SHORT_FORMS.get(text, text)
    return text if text in known else None
