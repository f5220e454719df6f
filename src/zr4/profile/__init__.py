"""Profiles: the Pydantic models and the YAML loader."""

from zr4.profile.load import bundled_profile_names, load_profile
from zr4.profile.models import GGUF_LEVELS, Profile

__all__ = ["GGUF_LEVELS", "Profile", "bundled_profile_names", "load_profile"]
