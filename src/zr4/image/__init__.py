"""What runs inside the container: `zr4 start`, the model downloads, output sync, the auth proxy, health,
doctor and the RunPod Serverless worker.

Nothing under this package may import Jinja2 or Typer: the image imports it on every boot. It builds on
zr4.core, its worker talks to ComfyUI through zr4.client, and the doctor reads the baked profile with
zr4.profile; it never imports the host's commands (import-linter checks it: pyproject.toml).
"""
