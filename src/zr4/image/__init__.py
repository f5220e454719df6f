"""What runs inside the container: downloads, GPU tuning, output sync, start.

Nothing under this package may import Jinja2 or Typer: the image imports it on every boot.
"""
