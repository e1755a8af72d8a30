"""The one exception type of extraction: every message names the file and the problem."""

from __future__ import annotations


class ExtractError(Exception):
    """A video, caption or weights file that cannot be extracted (corrupt, empty, no video stream, timeout, ...)."""
