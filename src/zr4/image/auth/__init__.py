"""Authentication in front of ComfyUI: a small reverse proxy on the public port, on by default.

ComfyUI has no authentication, and a RunPod pod's HTTP port is public through RunPod's proxy, so
`zr4 start` moves ComfyUI to a loopback-only port and puts :mod:`zr4.image.auth.proxy` on the
public one. Browsers log in once (a signed, HttpOnly session cookie); API clients send
``Authorization: Bearer <token>``.

- :mod:`zr4.core.auth_settings`: ``ZR4_AUTH`` / ``ZR4_AUTH_TOKEN`` / the token file on the volume, and the
  port layout (in core: zr4's clients find the token as the proxy does);
- :mod:`.tokens`: constant-time token checks and the session cookie's signature;
- :mod:`.revoked`: sessions ended by a logout, kept on the volume;
- :mod:`.ratelimit`: failed attempts per client, with a growing lock-out, and a limit for all;
- :mod:`.pages`: the login page (and where it may send the browser back to);
- :mod:`.status_page`: the boot's status page, served in place of ComfyUI's while the boot is not ready;
- :mod:`.connections`: header and idle timeouts, the connection cap below the open-file limit;
- :mod:`.logs`: one line per event in the container log, never a request's content;
- :mod:`.proxy`: the aiohttp server (HTTP streamed both ways, websocket relayed, origin checks);
- :mod:`.front`: what `zr4 start` calls (decide the ports, run the proxy supervised);
- :mod:`zr4.client.auth`: the ``Authorization`` header for zr4's own clients (`zr4 health`, `zr4 dance`).
"""
