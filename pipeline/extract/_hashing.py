"""Content hashes of large input files (weights, word vectors), remembered per (path, size, mtime) in-process."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's content; re-hashes only when its size or mtime changed (in this process)."""
    p = Path(path).expanduser().absolute()
    try:
        st = p.stat()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read ({exc})") from exc
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]
