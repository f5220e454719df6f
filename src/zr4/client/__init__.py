"""A client of a running ComfyUI: `zr4 dance` and the serverless worker talk to ComfyUI through it.

The HTTP and websocket API, the API-format job workflow, the media a job sends, and the credentials
for the auth proxy. It imports only ``zr4.core`` (import-linter checks it), so it runs on a laptop
against a pod as well as inside the image; the image's worker imports it, never the reverse.
"""
