"""Errors of the model manager; each message names the file, repository or folder to act on."""

from __future__ import annotations

from zr4.errors import Zr4Error


class ModelsError(Zr4Error):
    """A model could not be planned, fetched or verified."""


class ManifestError(ModelsError):
    """The model manifest is malformed."""


class SettingsError(ModelsError):
    """An environment variable or profile value for the models is invalid."""


class GgufLevelError(ModelsError):
    """The requested GGUF level is not in the repository and fallback is off (``--strict``)."""


class HubAuthError(ModelsError):
    """401/403: the repository is gated or private."""


class HubNotFoundError(ModelsError):
    """404: repository, revision or path does not exist."""


class NetworkError(ModelsError):
    """The model host cannot be reached (DNS, refused, timeouts, repeated drops)."""


class IntegrityError(ModelsError):
    """A downloaded file does not have the expected size or sha256, even after a retry."""


class DiskSpaceError(ModelsError):
    """Not enough free space for what is still to be fetched; ``needed_bytes`` and ``free_bytes``
    say how much (the boot's status page states the difference)."""

    def __init__(self, message: str, needed_bytes: int | None = None, free_bytes: int | None = None) -> None:
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.free_bytes = free_bytes


class StorageError(ModelsError):
    """The models folder cannot be written: read-only volume, disk full, permissions."""
