"""What the host and the image share: facts, decisions and file formats both sides must agree on.

The image layout, the CUDA architecture facts, GGUF levels, ComfyUI's flags and command line, the VRAM
planner and `zr4 tune`, the workflow graph, the model manifest and its selection, the auth settings,
the baked profile's reader, and the helpers every side uses: atomic writes, environment parsing, the
YAML/JSON reader, byte counts as text and secret redaction. This package imports neither side (no
``zr4.image``, ``zr4.client``, ``zr4.profile`` or host command; import-linter checks it) and, like the
image, never Jinja2 or Typer: the image's venv imports it on every boot.
"""
