"""Which files the app may send: the source videos of the indexed dataset, and nothing else.

The videos are addressed by their path relative to the dataset's media root (the deepest folder that holds every
local source). A request path is refused with 403 when it tries to leave that root — ``..`` or ``.`` segments, an
absolute path, a backslash or NUL, percent-encoded dots, slashes, backslashes, NULs or percents in the raw URL
(encoded traversal, double encoding), or a path whose real location (symlinks followed) lies outside the root —
and with 404 when it stays inside but names no video of the dataset. Sources given as URLs are not served.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

_ENCODED = re.compile(r"%(2e|2f|5c|00|25)", re.IGNORECASE)


class MediaRefused(Exception):
    """A request the media root does not answer: ``status`` 403 (forbidden path) or 404 (not a dataset file)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class MediaRoot:
    """The local source files of a dataset under their common folder.

    ``url_path(source)`` is the quoted relative path the app links to (None when the source cannot be served);
    ``resolve(decoded, raw)`` maps a request back to a file or raises :class:`MediaRefused`.
    """

    def __init__(self, sources: Iterable[str]) -> None:
        local = sorted({os.path.abspath(s) for s in sources if s and "://" not in s})
        self.root: str | None = os.path.commonpath([os.path.dirname(p) for p in local]) if local else None
        self.real_root = os.path.realpath(self.root) if self.root else None
        self._relative: dict[str, str] = {}
        self.allowed: set[str] = set()
        for path in local:
            real = os.path.realpath(path)
            if self.real_root is None or not _within(real, self.real_root) or not os.path.isfile(real):
                continue  # a source that is a symlink out of the root, or gone: never served
            self.allowed.add(real)
            self._relative[path] = Path(os.path.relpath(path, self.root)).as_posix()

    def url_path(self, source: str) -> str | None:
        """The path under ``/media/`` that serves ``source`` (percent-quoted), or None when it is not served."""
        if not source or "://" in source:
            return None
        rel = self._relative.get(os.path.abspath(source))
        return quote(rel) if rel is not None else None

    def file_of(self, source: str) -> str | None:
        """The real path of ``source`` when it is served, else None."""
        if self.url_path(source) is None:
            return None
        real = os.path.realpath(os.path.abspath(source))
        return real if real in self.allowed else None

    def resolve(self, decoded: str, raw: str | None = None) -> str:
        """The real path of the dataset file that request path ``decoded`` names (``raw``: the same path as it
        came on the wire, before percent-decoding)."""
        if self.root is None or self.real_root is None:
            raise MediaRefused(404, "this index has no local video files")
        if raw is not None and _ENCODED.search(raw):
            raise MediaRefused(403, "percent-encoded dots, slashes, backslashes, NULs or percents are refused")
        if not decoded:
            raise MediaRefused(404, "no file named")
        if "\x00" in decoded or "\\" in decoded:
            raise MediaRefused(403, "NUL or backslash in the path")
        if decoded.startswith("/") or re.match(r"^[A-Za-z]:", decoded):
            raise MediaRefused(403, "absolute paths are refused")
        if any(part in ("..", ".") for part in decoded.split("/")):
            raise MediaRefused(403, "'..' and '.' segments are refused")
        real = os.path.realpath(os.path.join(self.root, *[p for p in decoded.split("/") if p]))
        if not _within(real, self.real_root):
            raise MediaRefused(403, "the path leads outside the dataset's folder")
        if real not in self.allowed:
            raise MediaRefused(404, "not a video of the indexed dataset")
        return real
