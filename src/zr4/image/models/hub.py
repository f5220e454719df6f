"""The Hugging Face Hub client at the edge: URLs, auth headers and metadata.

Works with huggingface_hub 0.36.x (the image: transformers 4.57 needs < 1.0) and 1.x/2.x (a
developer machine); only APIs present in both are used (HfApi.get_paths_info, list_repo_files,
model_info, hf_hub_url, build_hf_headers). Bytes are fetched by zr4's own ranged downloader:
huggingface_hub 2.x does not resume across processes (bench/results/models.md).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from zr4 import __version__
from zr4.core.model_files.errors import HubAuthError, HubNotFoundError, ModelsError, NetworkError

_T = TypeVar("_T")

_TRANSPORT_ERROR_NAMES = {
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "ReadTimeout",
    "TimeoutException",
    "TransportError",
    "NetworkError",
    "ProxyError",
    "OfflineModeIsEnabled",
}


@dataclass(frozen=True)
class RemoteFile:
    """What the Hub says about one file: size and, for LFS files, the sha256 of the content."""

    path: str
    size: int
    sha256: str | None


def is_transport_error(error: BaseException) -> bool:
    """True for "could not talk to the server" errors of requests (0.36.x) and httpx (1.x/2.x)."""
    if isinstance(error, (OSError, TimeoutError)):
        return True
    return any(cls.__name__ in _TRANSPORT_ERROR_NAMES for cls in type(error).__mro__)


def describe_http_failure(
    status: int, repo: str | None, revision: str, path: str | None, url: str
) -> ModelsError:
    """The user-facing error for an HTTP status from the Hub or a mirror."""
    where = (f"{repo}@{revision}:{path}" if path else f"{repo}@{revision}") if repo else url
    if status in (401, 403):
        return HubAuthError(
            f"HTTP {status} for {where}: the repository is gated or private; set HF_TOKEN to a token "
            "that has access (and accept the model's terms on its Hub page)"
        )
    if status == 404:
        if repo and path:
            return HubNotFoundError(
                f"HTTP 404: {path!r} not found in repository {repo!r} at revision {revision!r} ({url})"
            )
        if repo:
            return HubNotFoundError(
                f"HTTP 404: repository {repo!r} or its revision {revision!r} not found ({url})"
            )
        return HubNotFoundError(f"HTTP 404: {url} not found")
    return ModelsError(f"HTTP {status} for {where}")


class HubClient:
    """Thin wrapper over ``huggingface_hub.HfApi`` pointed at one endpoint with one token."""

    def __init__(self, endpoint: str, token: str | None) -> None:
        from huggingface_hub import HfApi

        self.endpoint = endpoint.rstrip("/")
        self._token = token or None
        self._api = HfApi(
            endpoint=self.endpoint, token=self._token, library_name="zr4", library_version=__version__
        )
        self._commits: dict[tuple[str, str], str] = {}

    def check_reachable(self, timeout_s: float = 10.0) -> None:
        """Fail fast with NetworkError when the endpoint's host cannot even be connected to.

        huggingface_hub retries some calls with backoff for ~30 s; a pod without network
        should say so at once.
        """
        parts = urlsplit(self.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "", port), timeout=timeout_s).close()
        except OSError as error:
            raise NetworkError(
                f"cannot reach {self.endpoint} (no network?): {error}; "
                "files already fetched are kept and the next run resumes"
            ) from error

    def headers(self) -> dict[str, str]:
        from huggingface_hub.utils import build_hf_headers

        return dict(build_hf_headers(token=self._token, library_name="zr4", library_version=__version__))

    def file_url(self, repo: str, revision: str, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return str(hf_hub_url(repo, path, revision=revision, endpoint=self.endpoint))

    def commit_of(self, repo: str, revision: str) -> str:
        """The commit a branch or tag points at now (so every file of a run comes from one commit)."""
        key = (repo, revision)
        if key not in self._commits:
            info = self._call(lambda: self._api.model_info(repo, revision=revision), repo, revision, None)
            self._commits[key] = str(info.sha or revision)
        return self._commits[key]

    def list_files(self, repo: str, revision: str) -> list[str]:
        return list(
            self._call(lambda: self._api.list_repo_files(repo, revision=revision), repo, revision, None)
        )

    def paths_info(self, repo: str, revision: str, paths: Iterable[str]) -> dict[str, RemoteFile]:
        wanted = sorted(set(paths))
        infos = self._call(
            lambda: self._api.get_paths_info(repo, wanted, revision=revision), repo, revision, None
        )
        found: dict[str, RemoteFile] = {}
        for info in infos:
            size = getattr(info, "size", None)
            if size is None:  # a folder
                continue
            lfs = getattr(info, "lfs", None)
            sha256 = None
            if lfs is not None:
                sha256 = getattr(lfs, "sha256", None) or (
                    lfs.get("sha256") if isinstance(lfs, dict) else None
                )
            found[info.path] = RemoteFile(
                path=info.path, size=int(size), sha256=str(sha256).lower() if sha256 else None
            )
        return found

    def _call(self, action: Callable[[], _T], repo: str, revision: str, path: str | None) -> _T:
        try:
            return action()
        except Exception as error:
            raise translate_hub_error(error, self.endpoint, repo, revision, path) from error


def translate_hub_error(
    error: BaseException, endpoint: str, repo: str, revision: str, path: str | None
) -> ModelsError:
    """Map huggingface_hub / transport exceptions to zr4 errors with an actionable message."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    name = type(error).__name__
    if status is not None:
        if name == "RevisionNotFoundError":
            return HubNotFoundError(
                f"HTTP 404: revision {revision!r} not found in repository {repo!r} ({endpoint})"
            )
        if name == "RepositoryNotFoundError" and status == 404:
            return HubNotFoundError(
                f"HTTP 404: repository {repo!r} not found on {endpoint} (revision {revision!r})"
            )
        return describe_http_failure(int(status), repo, revision, path, endpoint)
    if is_transport_error(error):
        return NetworkError(
            f"cannot reach {endpoint} for {repo}@{revision} (no network?): {name}: {error}; "
            "files already fetched are kept and the next run resumes"
        )
    return ModelsError(f"Hub request for {repo}@{revision} failed: {name}: {error}")
