"""Rendering a profile into a Docker build context."""

from zr4.render.engine import RenderedFile, check_rendered, render_files, write_context

__all__ = ["RenderedFile", "check_rendered", "render_files", "write_context"]
