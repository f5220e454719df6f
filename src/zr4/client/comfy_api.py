"""A client for ComfyUI's own HTTP and websocket API, as ComfyUI v0.7.0's ``server.py`` serves it.

Routes used (comfyanonymous/ComfyUI@f59f71cf ``server.py`` and ``app/user_manager.py``):
``GET /system_stats``, ``GET /queue``, ``POST /upload/image`` (multipart field ``image``; the
VideoHelperSuite frontend uploads videos through the same route), ``POST /prompt`` (``prompt`` and
``client_id``; a refused workflow answers 400 with ``error`` and ``node_errors``), ``GET /ws?clientId=``
(JSON messages ``{"type", "data"}``: ``status``, ``execution_start``, ``execution_cached``,
``executing``, ``progress``, ``executed``, ``execution_success``, ``execution_error``,
``execution_interrupted``; binary frames are previews), ``GET /history/{prompt_id}``, ``GET /view``
and ``GET /userdata`` / ``GET /userdata/{file}``. To stop a job: ``POST /queue`` with
``{"delete": [prompt_id]}`` removes a prompt that has not started (``delete_queue_item`` in
``execution.py``; a running one is not in the pending queue and stays), ``POST /interrupt`` with
``{"prompt_id"}`` interrupts that prompt only when it is the one running (without a ``prompt_id`` it
interrupts whatever runs); ``POST /prompt`` takes the caller's ``prompt_id``, so a job knows its id
before the prompt is queued.

Every request carries ``Authorization: Bearer <token>`` when a token is configured (the auth proxy in
front of ComfyUI reads ``ZR4_AUTH_TOKEN``). HTTP goes through ``urllib``; the websocket through the
``websockets`` package's synchronous client. No Jinja2, no Typer: the image's zr4 venv runs this.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zr4.core.env import EnvError, env_port
from zr4.core.redact import redact_url
from zr4.errors import UsageError, Zr4Error

DEFAULT_URL = "http://127.0.0.1:8188"
# ComfyUI answers each message type with a small JSON body; a binary preview can be larger.
_WS_MAX_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


class ComfyError(Zr4Error):
    """Something ComfyUI answered (or did not) that stops the job; the message is one line."""


class ComfyUnreachable(ComfyError):
    """Nothing answers at the URL."""


class ComfyAuthError(ComfyError):
    """ComfyUI (its auth proxy) refused the request: no token or a wrong one."""


class PromptRejected(ComfyError):
    """``POST /prompt`` refused the workflow; ``problems`` holds one line per node input."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class ExecutionFailed(ComfyError):
    """A node raised while the workflow ran (``execution_error``)."""

    def __init__(
        self, message: str, node_id: str, node_type: str, exception_type: str, exception_message: str
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message

    @property
    def out_of_memory(self) -> bool:
        return is_out_of_memory(self.exception_type, self.exception_message)


def is_out_of_memory(exception_type: str, exception_message: str) -> bool:
    """torch's ``OutOfMemoryError`` (ComfyUI's OOM_EXCEPTION) or its message, from any node pack."""
    text = f"{exception_type} {exception_message}".lower()
    return "outofmemoryerror" in text.replace(" ", "") or "out of memory" in text


class ComfyUrlError(ComfyError):
    """A ComfyUI URL the user gave cannot be one; the message names where it came from."""


def parse_comfyui_url(value: str) -> str:
    """``value`` as a ComfyUI base URL (``http://`` added when no scheme, no trailing ``/``).

    Raises ValueError saying what is wrong. Checked here, not left to ``http.client``: it raises
    ``InvalidURL`` (a traceback) for a space or a port that is not a number, and ``http://`` alone
    would otherwise become the host ``http``.
    """
    text = value.strip()
    if not text:
        raise ValueError("it is empty")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError("it contains a space or a control character (separate several URLs with commas)")
    url = text if "://" in text else f"http://{text}"
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"the scheme must be http:// or https://, not {parsed.scheme}://")
    if parsed.username is not None or parsed.password is not None:
        raise ValueError(
            "it holds a user name or password: remove them (ComfyUI's token goes in ZR4_AUTH_TOKEN)"
        )
    if not parsed.hostname:
        raise ValueError("it has no host: use http://HOST:PORT")
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError("the port must be a number from 1 to 65535")
    if parsed.query or parsed.fragment:
        raise ValueError("remove the ?query / #fragment part")
    return url.rstrip("/")


def bearer_headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def first_line(text: str, limit: int = 300) -> str:
    """The first non-empty line of ``text``, cut at ``limit`` characters (messages stay one line)."""
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def describe_node_errors(node_errors: Mapping[str, Any]) -> tuple[str, ...]:
    """One line per problem of ``POST /prompt``'s ``node_errors``: which node, which input, what."""
    lines = []
    for node_id, entry in sorted(node_errors.items(), key=lambda item: str(item[0])):
        class_type = entry.get("class_type", "?") if isinstance(entry, Mapping) else "?"
        errors = entry.get("errors", []) if isinstance(entry, Mapping) else []
        for error in errors or [{}]:
            extra = error.get("extra_info") or {}
            where = f"node {node_id} ({class_type})"
            if extra.get("input_name"):
                where += f" input {extra['input_name']!r}"
            details, message = str(error.get("details") or ""), str(error.get("message") or "")
            # A missing input comes as message "Required input is missing", details = the input's name
            # (comfyanonymous/ComfyUI@f59f71cf, v0.7.0, execution.py validate_inputs): the name alone says nothing.
            what = (details if details and details != extra.get("input_name") else message) or "invalid"
            lines.append(f"{where}: {first_line(what)}")
    return tuple(lines)


def prompt_rejection(body: Mapping[str, Any], base_url: str) -> PromptRejected:
    """The error for a 400 answer of ``POST /prompt``."""
    problems = describe_node_errors(body.get("node_errors") or {})
    error = body.get("error") or {}
    if problems:
        message = f"ComfyUI at {base_url} refused the workflow: " + "; ".join(problems)
    else:
        text = error.get("message", "invalid prompt") if isinstance(error, Mapping) else str(error)
        details = error.get("details", "") if isinstance(error, Mapping) else ""
        message = f"ComfyUI at {base_url} refused the workflow: {first_line(text)}"
        if details:
            message += f" ({first_line(details)})"
    return PromptRejected(message, problems)


def execution_failure(data: Mapping[str, Any]) -> ExecutionFailed:
    """The error for an ``execution_error`` message."""
    node_id = str(data.get("node_id", "?"))
    node_type = str(data.get("node_type", "?"))
    exception_type = str(data.get("exception_type", "Exception"))
    exception_message = str(data.get("exception_message", ""))
    short_type = exception_type.rsplit(".", 1)[-1]
    message = f"node {node_id} ({node_type}) failed: {short_type}: {first_line(exception_message)}"
    return ExecutionFailed(message, node_id, node_type, exception_type, exception_message)


@dataclass(frozen=True)
class QueueState:
    """What ``GET /queue`` says: the prompt ids running and waiting."""

    running: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def length(self) -> int:
        return len(self.running) + len(self.pending)


@dataclass(frozen=True)
class OutputFile:
    """A file a node reported in its ``executed`` output (``images``, ``gifs``, ``videos`` ...)."""

    node_id: str
    filename: str
    subfolder: str
    type: str  # output, temp or input
    format: str | None = None

    @property
    def rel_path(self) -> str:
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename


def output_files(node_id: str, output: Mapping[str, Any] | None) -> list[OutputFile]:
    """The files in one node's UI output (VideoHelperSuite reports videos under ``gifs``, each with the
    first frame it saved beside it as ``workflow``, a PNG holding the workflow: VideoHelperSuite
    ``videohelpersuite/nodes.py``, ``VideoCombine.combine_video``). The PNG is listed before its video."""
    files = []
    for key, items in (output or {}).items():
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, Mapping) and isinstance(item.get("filename"), str) and key != "workflow":
                subfolder = str(item.get("subfolder", "") or "")
                kind = str(item.get("type", "output") or "output")
                companion = item.get("workflow")
                if isinstance(companion, str) and companion and companion != item["filename"]:
                    files.append(OutputFile(str(node_id), companion, subfolder, kind, "image/png"))
                files.append(OutputFile(str(node_id), item["filename"], subfolder, kind, item.get("format")))
    return files


def _multipart(fields: Mapping[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = f"zr4-{uuid.uuid4().hex}"
    parts = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    parts.append(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{safe_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class EventStream:
    """ComfyUI's websocket for one client id; :meth:`next` returns the next JSON message or None."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def next(self, timeout_s: float) -> dict[str, Any] | None:
        """The next ``{"type", "data"}`` message; None when none came within ``timeout_s``.

        Binary frames (sampler previews) are skipped. Raises :class:`ComfyUnreachable` when the
        connection closes.
        """
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                message = self._connection.recv(timeout=remaining)
            except TimeoutError:
                return None
            except ConnectionClosed as error:
                raise ComfyUnreachable(f"ComfyUI closed its websocket ({error})") from None
            if isinstance(message, bytes):
                continue
            try:
                parsed = json.loads(message)
            except ValueError:
                continue
            if isinstance(parsed, dict) and isinstance(parsed.get("type"), str):
                data = parsed.get("data")
                return {"type": parsed["type"], "data": data if isinstance(data, dict) else {}}


class ComfyClient:
    """One ComfyUI server. Methods raise :class:`ComfyError` subclasses with one-line messages."""

    def __init__(
        self, base_url: str = DEFAULT_URL, token: str | None = None, timeout_s: float = 30.0
    ) -> None:
        try:
            url = parse_comfyui_url(base_url)
        except ValueError as error:
            raise ComfyUrlError(f"{redact_url(base_url)!r} is not a ComfyUI URL: {error}") from None
        self.base_url = url
        self.token = token or None
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"ComfyClient({self.base_url!r})"

    # --- HTTP ----------------------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        headers = {"Accept": "application/json", **bearer_headers(self.token)}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s)
        except urllib.error.HTTPError as error:
            if error.code in (401, 403):
                hint = "set ZR4_AUTH_TOKEN to ComfyUI's token" if not self.token else "the token is wrong"
                raise ComfyAuthError(
                    f"ComfyUI at {self.base_url} refused {method} {path.split('?')[0]} with HTTP {error.code}: {hint}"
                ) from None
            raise
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ComfyUnreachable(
                f"ComfyUI is not reachable at {self.base_url} ({reason}); start it (`zr4 start`) or pass --comfyui URL"
            ) from None

    def _json(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        try:
            with self._open(method, path, body, "application/json" if body is not None else None) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered {method} {path.split('?')[0]} with HTTP {error.code}"
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered {method} {path.split('?')[0]} with something that is not JSON"
            ) from None

    def system_stats(self) -> dict[str, Any]:
        stats = self._json("GET", "/system_stats")
        if not isinstance(stats, dict) or "system" not in stats:
            raise ComfyError(f"{self.base_url} answers, but not like ComfyUI (/system_stats has no 'system')")
        return stats

    def queue_state(self) -> QueueState:
        """The prompt ids running and pending (``GET /queue``; an item is ``[number, prompt_id, …]``)."""
        queue = self._json("GET", "/queue")
        if not isinstance(queue, dict):
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered GET /queue with something that is not a queue"
            )

        def ids(items: Any) -> tuple[str, ...]:
            found = []
            for item in items if isinstance(items, list) else []:
                found.append(str(item[1]) if isinstance(item, list) and len(item) > 1 else "")
            return tuple(found)

        return QueueState(ids(queue.get("queue_running")), ids(queue.get("queue_pending")))

    def queue_length(self) -> int:
        """Prompts running plus pending (``GET /queue``): how busy this server is."""
        return self.queue_state().length

    def _post_command(self, path: str, payload: Mapping[str, Any]) -> None:
        """A POST whose answer has no body (``/queue``, ``/interrupt`` answer 200 and nothing else)."""
        try:
            with self._open("POST", path, json.dumps(payload).encode(), "application/json") as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered POST {path} with HTTP {error.code}"
            ) from None

    def delete_queued(self, prompt_id: str) -> None:
        """Remove a prompt that has not started from the queue; a running one is left alone."""
        self._post_command("/queue", {"delete": [prompt_id]})

    def interrupt(self, prompt_id: str) -> None:
        """Interrupt ``prompt_id`` if it is the prompt running (ComfyUI checks; no other prompt is hit)."""
        self._post_command("/interrupt", {"prompt_id": prompt_id})

    def upload(self, data: bytes, filename: str, overwrite: bool = True) -> str:
        """Put a file into ComfyUI's ``input/`` folder; returns the name a loader node takes."""
        body, content_type = _multipart(
            {"type": "input", "overwrite": "true" if overwrite else "false"}, "image", filename, data
        )
        try:
            with self._open(
                "POST", "/upload/image", body, content_type, timeout_s=max(self.timeout_s, 300)
            ) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ComfyError(
                f"ComfyUI at {self.base_url} refused the upload of {filename} with HTTP {error.code}"
            ) from None
        except ValueError:
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered the upload with something that is not JSON"
            ) from None
        name = str(answer.get("name", filename))
        subfolder = str(answer.get("subfolder", "") or "")
        return f"{subfolder}/{name}" if subfolder else name

    def submit(self, workflow: Mapping[str, Any], client_id: str, prompt_id: str | None = None) -> str:
        """Queue an API-format workflow as ``prompt_id`` (default: ComfyUI picks one); returns the id.
        A refusal raises :class:`PromptRejected`."""
        payload: dict[str, Any] = {"prompt": workflow, "client_id": client_id}
        if prompt_id is not None:
            payload["prompt_id"] = prompt_id
        body = json.dumps(payload).encode()
        try:
            with self._open("POST", "/prompt", body, "application/json") as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                rejection = json.loads(error.read())
            except ValueError:
                rejection = None
            if isinstance(rejection, dict) and ("node_errors" in rejection or "error" in rejection):
                raise prompt_rejection(rejection, self.base_url) from None
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered POST /prompt with HTTP {error.code}"
            ) from None
        except ValueError:
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered POST /prompt with something that is not JSON"
            ) from None
        queued = answer.get("prompt_id")
        if not isinstance(queued, str):
            raise ComfyError(f"ComfyUI at {self.base_url} queued the workflow but returned no prompt_id")
        return queued

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """This prompt's history entry (``status``, ``outputs``), or None while it has none."""
        answer = self._json("GET", f"/history/{urllib.parse.quote(prompt_id)}")
        entry = answer.get(prompt_id) if isinstance(answer, dict) else None
        return entry if isinstance(entry, dict) else None

    def download(self, item: OutputFile, destination: Path) -> int:
        """Stream an output file (``GET /view``) into ``destination`` (written whole, then renamed)."""
        query = urllib.parse.urlencode(
            {"filename": item.filename, "subfolder": item.subfolder, "type": item.type}
        )
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{destination.name}.part")
        size = 0
        try:
            with (
                self._open("GET", f"/view?{query}", timeout_s=max(self.timeout_s, 300)) as response,
                partial.open("wb") as sink,
            ):
                while chunk := response.read(_CHUNK):
                    sink.write(chunk)
                    size += len(chunk)
            partial.replace(destination)
        except urllib.error.HTTPError as error:
            raise ComfyError(
                f"ComfyUI at {self.base_url} has no {item.rel_path} ({item.type}): HTTP {error.code}"
            ) from None
        finally:
            partial.unlink(missing_ok=True)
        return size

    def list_userdata(self, directory: str) -> list[dict[str, Any]]:
        """Files in the user's ``directory`` (``GET /userdata?dir=…&full_info=true``); [] when absent."""
        query = urllib.parse.urlencode({"dir": directory, "full_info": "true"})
        try:
            with self._open("GET", f"/userdata?{query}") as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return []
            raise ComfyError(
                f"ComfyUI at {self.base_url} answered GET /userdata with HTTP {error.code}"
            ) from None
        except ValueError:
            return []
        return [entry for entry in answer if isinstance(entry, dict)] if isinstance(answer, list) else []

    def userdata(self, path: str) -> bytes:
        """One user file (``GET /userdata/{file}``, the path URL-encoded as one segment)."""
        try:
            with self._open("GET", "/userdata/" + urllib.parse.quote(path, safe="")) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            raise ComfyError(
                f"ComfyUI at {self.base_url} has no user file {path}: HTTP {error.code}"
            ) from None

    def object_info(self, class_type: str) -> dict[str, Any] | None:
        """A node's definition (``GET /object_info/{class}``): its inputs, with the files a loader
        offers; None where ComfyUI does not know the node or does not answer the route."""
        try:
            answer = self._json("GET", "/object_info/" + urllib.parse.quote(class_type, safe=""))
        except ComfyError:
            return None
        info = answer.get(class_type) if isinstance(answer, dict) else None
        return info if isinstance(info, dict) else None

    def boot_status(self) -> dict[str, Any] | None:
        """The boot's status (:mod:`zr4.core.boot_status`) as zr4's auth proxy serves it at
        ``/zr4/status.json``; None where nothing serves it (ComfyUI itself, an older image, no
        answer), and whatever the reason: without a status a job goes on as before."""
        try:
            with self._open("GET", "/zr4/status.json", timeout_s=min(self.timeout_s, 10.0)) as response:
                answer = json.loads(response.read())
        except (ComfyError, urllib.error.HTTPError, OSError, ValueError):
            return None
        return answer if isinstance(answer, dict) and isinstance(answer.get("models"), dict) else None

    # --- websocket -----------------------------------------------------------------------------

    def ws_url(self, client_id: str) -> str:
        parsed = urllib.parse.urlsplit(self.base_url)
        scheme = "wss" if parsed.scheme == "https" else "ws"
        path = parsed.path.rstrip("/") + "/ws"
        return urllib.parse.urlunsplit(
            (scheme, parsed.netloc, path, f"clientId={urllib.parse.quote(client_id)}", "")
        )

    @contextmanager
    def events(self, client_id: str) -> Iterator[EventStream]:
        """Open ``/ws?clientId=…``; open it BEFORE queueing, or early messages are lost."""
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        try:
            opened = connect(
                self.ws_url(client_id),
                additional_headers=bearer_headers(self.token),
                open_timeout=self.timeout_s,
                max_size=_WS_MAX_BYTES,
                compression=None,
                proxy=None,
            )
        except InvalidStatus as error:
            status = error.response.status_code
            if status in (401, 403):
                raise ComfyAuthError(
                    f"ComfyUI at {self.base_url} refused its websocket with HTTP {status}: set ZR4_AUTH_TOKEN"
                ) from None
            raise ComfyError(f"ComfyUI at {self.base_url} refused its websocket with HTTP {status}") from None
        except (OSError, TimeoutError, WebSocketException) as error:
            raise ComfyUnreachable(
                f"ComfyUI's websocket at {self.base_url} is not reachable ({error})"
            ) from None
        with opened as connection:
            yield EventStream(connection)


def new_client_id() -> str:
    return uuid.uuid4().hex


def _checked_urls(listed: list[str], source: str, usage: bool) -> list[str]:
    """Each URL parsed; the first bad one is one line naming ``source`` (a UsageError for an option)."""
    urls = []
    for value in listed:
        try:
            urls.append(parse_comfyui_url(value))
        except ValueError as error:
            message = f"{source}: {redact_url(value.strip())!r} is not a ComfyUI URL: {error}"
            raise (UsageError(message) if usage else ComfyUrlError(message)) from None
    return urls


def comfyui_urls(
    environ: Mapping[str, str], explicit: list[str] | None = None, urls_file: Path | None = None
) -> list[str]:
    """Where the ComfyUI servers are: ``explicit`` (``--comfyui``, repeatable), else ``ZR4_COMFYUI_URLS``
    (comma-separated), else the instances `zr4 start` runs in this container (one per GPU, listed
    in ``zr4.core.image_layout.INSTANCE_URLS_FILE`` while they run), else the local one on ``COMFYUI_PORT``
    (8188). A URL that cannot be one is an error naming where it came from: ``--comfyui`` is a
    UsageError (exit 2), the others a ComfyUrlError."""
    if explicit:
        values = [url for value in explicit for url in value.split(",") if url.strip()]
        if not values:
            raise UsageError("--comfyui is empty: give http://HOST:PORT")
        return _checked_urls(values, "--comfyui", usage=True)
    listed = environ.get("ZR4_COMFYUI_URLS", "").strip()
    if listed:
        return _checked_urls([u for u in listed.split(",") if u.strip()], "ZR4_COMFYUI_URLS", usage=False)
    from zr4.core.image_layout import INSTANCE_URLS_FILE

    path = urls_file or Path(INSTANCE_URLS_FILE)
    try:
        listed = path.read_text(encoding="utf-8").strip()
    except OSError:
        listed = ""
    if listed:
        return _checked_urls([u for u in listed.split(",") if u.strip()], str(path), usage=False)
    try:
        port = env_port("COMFYUI_PORT", 8188, environ)
    except EnvError as error:
        raise ComfyUrlError(f"{error} (1-65535)") from None
    return [f"http://127.0.0.1:{port}"]


def auth_token(environ: Mapping[str, str]) -> str | None:
    """The Bearer token ComfyUI's auth proxy expects: ``ZR4_AUTH_TOKEN``, else (inside the pod) the
    token file `zr4 start` generated; None when unset or ``ZR4_AUTH=off``."""
    from zr4.client.auth import client_token

    return client_token(environ)
