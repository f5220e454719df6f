"""Authentication in front of ComfyUI: a small reverse proxy on the public port, on by default.

ComfyUI has no authentication, and a RunPod pod's HTTP port is public through RunPod's proxy, so
`zr4 start` moves ComfyUI to a loopback-only port and puts :mod:`zr4.image.auth.proxy` on the
public one. Browsers log in once (a signed, HttpOnly session cookie); API clients send
``Authorization: Bearer <token>``.

- :mod:`zr4.core.auth_settings`: ``ZR4_AUTH`` / ``ZR4_AUTH_TOKEN`` / the token file on the volume, and the
  port layout (in core: zr4's clients find the token as the proxy does);
- :mod:`.tokens`: constant-time token checks and the session cookie's signature;
- :mod:`.ratelimit`: failed attempts per client, with a growing lock-out;
- :mod:`.pages`: the login page;
- :mod:`.proxy`: the aiohttp server (HTTP streamed both ways, websocket relayed);
- :mod:`.front`: what `zr4 start` calls (decide the ports, run the proxy supervised);
- :mod:`zr4.client.auth`: the ``Authorization`` header for zr4's own clients (`zr4 health`, `zr4 dance`).
"""
