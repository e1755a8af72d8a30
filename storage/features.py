"""The feature store: one video's arrays per stream, computed once per (content, stream fingerprint), shared by every
dataset that holds the video.

Layout (README "Datasets")::

    <root>/features/<stream>/<stream-fp>/<key[:2]>/<key>.npy    the array (plain numpy: np.load reads it)
    <root>/features/<stream>/<stream-fp>/<key[:2]>/<key>.json   what made it (weights, precision, ffmpeg, probe...)

Streams and their keys: ``rgb2d``, ``rgb3d`` and ``audio`` are keyed by the source file's sha256, ``text`` by the
captions' digest (its input is the captions, not the video). A stream fingerprint covers every setting that shapes
that stream's arrays and nothing else, so changing the word vectors recomputes text only, and a benchmark whose
videos another dataset already extracted costs no network pass.

An entry exists once its ``.json`` exists: the array is written (atomically) first, the ``.json`` last. A crash
leaves at most an array without its ``.json`` (rewritten by the next run) or a temporary (swept). Two runs that
compute the same entry write the same bytes, so either rename may win.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage.workspace import Workspace

STREAMS = ("rgb2d", "rgb3d", "audio", "text")
# The member of a dataset sample (README "Shard sample") that holds each stream's array.
STREAM_MEMBERS = {"rgb2d": "rgb2d", "rgb3d": "rgb3d", "audio": "mel", "text": "w2v"}
_KEY = re.compile(r"^[0-9a-f]{16,64}$")  # a sha256 (of a file or of captions), hex
_FINGERPRINT = re.compile(r"^[0-9a-f]{8,64}$")


@dataclass
class StreamArrays:
    """One stream of one video: its array and what made it (JSON-able)."""

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


class FeatureStore:
    """Per-stream arrays under ``<root>/features`` of a workspace (see the module doc)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.join("features")

    def _base(self, stream: str, fingerprint: str, key: str) -> str:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; streams are {STREAMS}")
        if not _KEY.match(key) or not _FINGERPRINT.match(fingerprint):
            raise ValueError(f"feature store key {key!r} / fingerprint {fingerprint!r} must be lower-case hex")
        return f"{self.root}/{stream}/{fingerprint}/{key[:2]}/{key}"

    def array_path(self, stream: str, fingerprint: str, key: str) -> str:
        return self._base(stream, fingerprint, key) + ".npy"

    def meta_path(self, stream: str, fingerprint: str, key: str) -> str:
        return self._base(stream, fingerprint, key) + ".json"

    def has(self, stream: str, fingerprint: str, key: str) -> bool:
        return self.workspace.exists(self.meta_path(stream, fingerprint, key))

    def missing(self, fingerprints: dict[str, str], keys: dict[str, str]) -> list[str]:
        """The streams (in :data:`STREAMS` order) of one video that the store does not hold yet."""
        return [s for s in STREAMS if s in fingerprints and not self.has(s, fingerprints[s], keys[s])]

    def put(self, stream: str, fingerprint: str, key: str, entry: StreamArrays) -> None:
        """Store one entry: the array (``np.save`` format), then its meta, each atomically."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(entry.array), allow_pickle=False)
        self.workspace.write_bytes(self.array_path(stream, fingerprint, key), buf.getvalue())
        text = json.dumps(entry.meta, sort_keys=True, separators=(",", ":"))
        self.workspace.write_text(self.meta_path(stream, fingerprint, key), text)

    def meta(self, stream: str, fingerprint: str, key: str) -> dict[str, Any]:
        path = self.meta_path(stream, fingerprint, key)
        try:
            return json.loads(self.workspace.read_bytes(path))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"feature store: no {stream} entry {key} ({path})") from exc
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc

    def array_bytes(self, stream: str, fingerprint: str, key: str) -> bytes:
        """The entry's ``.npy`` file as stored (a dataset sample's member is these very bytes)."""
        path = self.array_path(stream, fingerprint, key)
        try:
            return self.workspace.read_bytes(path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"feature store: {stream} entry {key} has no array ({path})") from exc

    def get(self, stream: str, fingerprint: str, key: str) -> StreamArrays:
        meta = self.meta(stream, fingerprint, key)  # first: without its meta, an array is not an entry
        data = self.array_bytes(stream, fingerprint, key)
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{self.array_path(stream, fingerprint, key)}: not a numpy array file ({exc})") from exc
        return StreamArrays(array, meta)


__all__ = ["STREAMS", "STREAM_MEMBERS", "FeatureStore", "StreamArrays"]
