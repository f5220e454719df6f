"""The boot's status page, which the proxy serves itself, behind its login, while ComfyUI cannot.

From the first second of the boot the public port answers: a page request (a browser asking for
any of ComfyUI's pages) gets this page while ComfyUI does not answer yet or the models are still
arriving (or failed): the phase, each model file's bytes done of total, the rate and the time left,
and what failed with its fix. Its script polls ``/zr4/status.json`` (same origin, the session
cookie) every second and reloads into ComfyUI once ComfyUI answers and the models are in place;
from the moment ComfyUI answers it also offers to open ComfyUI at once. ``/zr4/status`` shows the
page at any time. Everything here sits behind the same authentication as ComfyUI: a visitor
without a session or token sees only the login page.

The content comes from the boot's status file (:mod:`zr4.core.boot_status`), named by
``ZR4_BOOT_STATUS`` in the proxy's environment (`zr4 start` sets it); without it the proxy serves
no status and passes every request on, as a proxy in front of a ComfyUI it did not start should.
The page runs one inline script, allowed by its hash in the Content-Security-Policy; file names
and messages reach the page as text nodes only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zr4.core import boot_status as bs

STATUS_PATH = "/zr4/status"
STATUS_JSON_PATH = "/zr4/status.json"
SKIP_QUERY = "zr4=comfyui"  # a page request with it goes to ComfyUI even while the models arrive
POLL_MS = 1000

_SCRIPT = """
(() => {
  const inPlace = document.body.dataset.inPlace === "1";
  const put = (id, text) => { const node = document.getElementById(id); if (node) node.textContent = text || ""; };
  const render = (status) => {
    put("headline", status.headline);
    put("summary", status.models.summary);
    put("comfyui", status.comfyui.text);
    const error = status.models.error;
    document.getElementById("failure").hidden = !error;
    put("error", error ? error.message : "");
    put("fix", error ? error.fix : "");
    const rows = (status.models.files || []).map((file) => {
      const row = document.createElement("tr");
      row.className = file.state;
      for (const text of [file.rel, file.text]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.appendChild(cell);
      }
      return row;
    });
    document.getElementById("files").replaceChildren(...rows);
    document.getElementById("open").hidden = !(status.view.comfyui_ready && !status.view.page_ready);
    if (inPlace && status.view.page_ready) location.reload();
  };
  const poll = async () => {
    try {
      const answer = await fetch("/zr4/status.json", {cache: "no-store", credentials: "same-origin"});
      if (answer.status === 401) { location.reload(); return; }
      if (answer.ok) render(await answer.json());
    } catch (error) {}
    setTimeout(poll, POLL_MS);
  };
  setTimeout(poll, POLL_MS);
})();
""".replace("POLL_MS", str(POLL_MS))
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()

HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Another origin's page may not even embed the answer (a <script src> or <img> of the JSON).
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": (
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; "
        "style-src 'unsafe-inline'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>zr4 · the pod is starting</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #202020; color: #ddd; margin: 0;
  display: flex; justify-content: center; }}
main {{ background: #2b2b2b; padding: 1.5em 2em; border-radius: 8px; margin: 2em 1em; width: min(52em, 94vw); }}
table {{ width: 100%; border-collapse: collapse; font-size: .92em; }}
td {{ padding: .25em .4em; border-top: 1px solid #3a3a3a; overflow-wrap: anywhere; }}
tr.done td {{ color: #8c8; }} tr.active td {{ color: #fff; }} tr.stopped td {{ color: #f88; }}
#failure {{ background: #4a2222; padding: .8em 1em; border-radius: 6px; }}
a {{ color: #9cf; }} small {{ color: #999; }}
</style>
</head>
<body data-in-place="{in_place}">
<main>
<h1>ComfyUI</h1>
<p id="headline">{headline}</p>
<div id="failure"{failure_hidden}><p id="error">{error}</p><p>Fix: <span id="fix">{fix}</span></p></div>
<h2>Models</h2>
<p id="summary">{summary}</p>
<table><tbody id="files">{rows}</tbody></table>
<h2>ComfyUI</h2>
<p id="comfyui">{comfyui}</p>
<p id="open"{open_hidden}><a href="{open_href}">Open ComfyUI now</a>: a workflow queued before the models
are in fails with ComfyUI's own missing-file error; this page turns into ComfyUI by itself once they are.</p>
<noscript><p>This page updates itself with JavaScript; reload it to see the progress.</p></noscript>
<p><small><a href="{status_path}">{status_path}</a> shows this page at any time;
<code>zr4 health --json</code> in the pod's terminal shows the same.</small></p>
</main>
<script>{script}</script>
</body>
</html>
"""


def status_file(environ: Mapping[str, str]) -> Path | None:
    """The boot's status file when `zr4 start` named one; None: no status is served."""
    value = (environ.get(bs.VARIABLE) or "").strip()
    return Path(value) if value else None


def view_of(status: Mapping[str, Any], public_port: int) -> dict[str, Any]:
    """The status as this port's visitor sees it: its ComfyUI's readiness, and whether the page
    should give way to ComfyUI (``page_ready``)."""
    ready = bs.comfyui_ready(status, public_port)
    models_usable = bs.models_state(status) in bs.MODELS_USABLE
    return {
        "public_port": public_port,
        "comfyui_ready": ready,
        "page_ready": ready and models_usable,
        "age_s": round(bs.age_s(status, time.time()), 1),
    }


def shows_in_place(status: Mapping[str, Any] | None, public_port: int, query: str) -> bool:
    """Whether a page request gets the status page instead of ComfyUI's."""
    if status is None or status.get("comfyui", {}).get("state") == bs.COMFYUI_EXITED:
        return False
    view = view_of(status, public_port)
    if not view["comfyui_ready"]:
        return True
    return not view["page_ready"] and SKIP_QUERY not in query.split("&")


def document(status: Mapping[str, Any], public_port: int) -> dict[str, Any]:
    return {**status, "view": view_of(status, public_port)}


def page(status: Mapping[str, Any], public_port: int, *, in_place: bool, raw_path: str) -> str:
    view = view_of(status, public_port)
    models = status.get("models", {})
    error = models.get("error") or {}
    rows = "".join(
        f'<tr class="{html.escape(str(item.get("state", "")), quote=True)}"><td>{html.escape(str(item.get("rel", "")))}'
        f"</td><td>{html.escape(str(item.get('text', '')))}</td></tr>"
        for item in models.get("files", [])
    )
    # In place of a page of ComfyUI's: that page, passed on this time; else ComfyUI's own start page.
    target = raw_path if in_place else "/"
    open_href = f"{target}{'&' if '?' in target else '?'}{SKIP_QUERY}"
    return _PAGE.format(
        in_place="1" if in_place else "0",
        headline=html.escape(str(status.get("headline", ""))),
        failure_hidden="" if error else " hidden",
        error=html.escape(str(error.get("message", ""))),
        fix=html.escape(str(error.get("fix", ""))),
        summary=html.escape(str(models.get("summary", ""))),
        rows=rows,
        comfyui=html.escape(str(status.get("comfyui", {}).get("text", ""))),
        open_hidden="" if view["comfyui_ready"] and not view["page_ready"] else " hidden",
        open_href=html.escape(open_href, quote=True),
        status_path=STATUS_PATH,
        script=_SCRIPT,
    )


def no_status_page() -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>zr4 · no boot status</title></head>"
        "<body><p>This proxy was not started by <code>zr4 start</code>: there is no boot status to show.</p>"
        "</body></html>"
    )


def json_body(status: Mapping[str, Any] | None, public_port: int) -> str:
    return json.dumps(None if status is None else document(status, public_port))
