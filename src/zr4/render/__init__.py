"""Rendering a profile into a Docker build context."""

from zr4.render.engine import RenderedFile, render_files
from zr4.render.output import OutputFolderError, check_rendered, context_profile, write_context

__all__ = [
    "OutputFolderError",
    "RenderedFile",
    "check_rendered",
    "context_profile",
    "render_files",
    "write_context",
]
