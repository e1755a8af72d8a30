"""The feature store: one video's arrays per stream, computed once per (content, stream fingerprint), shared by every
dataset that holds the video — each array stored once, in the dataset shards that hold it (storage/README.md).

Layout::

    <root>/features/<stream>/<stream-fp>/<key[:2]>/<key>.json   the entry: what made it (weights, precision, ffmpeg,
                                                                probe...) and where its array lies
    <root>/features/<stream>/<stream-fp>/<key[:2]>/<key>.npy    the array, only until a shard holds it (np.load reads it)
    <root>/datasets/<ds>/shards/<fp>/<name>.index.parquet       beside each shard: which entry each member holds

Streams and their keys: ``rgb2d``, ``rgb3d`` and ``audio`` are keyed by the source file's sha256, ``text`` by the
captions' digest (its input is the captions, not the video). Extra streams (``ExtractConfig.streams``: ``clip``,
``s3d``, ...) are keyed by the sha256 like the visual ones and stored as member ``<name>.npy`` of a sample. A stream fingerprint covers every setting that shapes
that stream's arrays and nothing else, so changing the word vectors recomputes text only, and a benchmark whose
videos another dataset already extracted costs no network pass: its shards are written from the first dataset's.

An entry's life: extraction writes the array (``.npy``, atomically) first and the ``.json`` (the bare meta) last — an
entry exists once its ``.json`` exists, so a crash leaves at most an array without its ``.json`` (rewritten by the
next run) or a temporary (swept). Once a dataset's shard holding the array is published (renamed into place, its
index beside it, the manifest naming it), :meth:`FeatureStore.locate` rewrites the ``.json`` as ``{"mmcaps_entry": 1,
"meta": ..., "at": {"shard", "offset", "size"}}`` and deletes the ``.npy``: the array is then read from the shard
with one ranged read (the member's data is the ``.npy`` file's bytes). A store of an earlier mmcaps (every entry a
bare meta and its ``.npy``) reads as is; ``mmcaps gc`` moves its arrays into the shards that already hold them.
Two runs that compute the same entry write the same bytes, so either rename may win; two datasets that locate the
same entry both point at a shard holding its bytes, so either rewrite may win.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.sample import captions_digest
from storage.shards import member_offsets, read_member
from storage.workspace import Workspace

STREAMS = ("rgb2d", "rgb3d", "audio", "text")
# The member of a dataset sample (storage/README.md "Shard sample") that holds each stream's array; an extra stream's
# member is its name (``clip`` -> ``clip.npy``).
STREAM_MEMBERS = {"rgb2d": "rgb2d", "rgb3d": "rgb3d", "audio": "mel", "text": "w2v"}
_EXTRA_STREAM = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # as pipeline.extract.registry.check_stream_name
_KEY = re.compile(r"^[0-9a-f]{16,64}$")  # a sha256 (of a file or of captions), hex
_FINGERPRINT = re.compile(r"^[0-9a-f]{8,64}$")
ENTRY_FORMAT = "mmcaps_entry"  # the marker of a located entry's JSON (a bare meta has no such key)
INDEX_SUFFIX = ".index.parquet"  # <shard>.tar -> <shard>.index.parquet
INDEX_SCHEMA = pa.schema(
    [
        pa.field("sample", pa.string(), nullable=False),  # the sample's __key__
        pa.field("member", pa.string(), nullable=False),  # rgb2d.npy, rgb3d.npy, mel.npy, w2v.npy
        pa.field("stream", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),  # the stream fingerprint
        pa.field("entry", pa.string(), nullable=False),  # the store key (sha256, or the captions' digest)
        pa.field("offset", pa.int64(), nullable=False),  # of the member's data in the tar
        pa.field("size", pa.int64(), nullable=False),
    ]
)
EntryId = tuple[str, str, str]  # (stream, stream fingerprint, key)


# Not extra stream names: the paper streams' members (mel.npy, w2v.npy) and the model's video modality (which
# concatenates streams).
RESERVED = ("mel", "w2v", "video")


def is_stream(name: str) -> bool:
    """A paper stream, or a valid extra stream name (lower-case identifier, not :data:`RESERVED`)."""
    return name in STREAMS or (bool(_EXTRA_STREAM.match(name)) and name not in RESERVED)


def stream_member(stream: str) -> str:
    """The sample member (without ``.npy``) holding ``stream``'s array: ``mel`` for audio, ``w2v`` for text, else the
    stream's own name."""
    return STREAM_MEMBERS.get(stream, stream)


def stream_order(names: Iterable[str]) -> list[str]:
    """``names`` in store order: the paper's four in :data:`STREAMS` order, then extra streams by name."""
    names = set(names)
    return [s for s in STREAMS if s in names] + sorted(names - set(STREAMS))


def stream_keys(sha256: str, captions_sha256: str, streams: Iterable[str] = STREAMS) -> dict[str, str]:
    """The store key of each stream of one video: the captions' digest for text, the file's sha256 for the rest."""
    return {s: (captions_sha256 if s == "text" else sha256) for s in stream_order([*STREAMS, *streams])}


@dataclass(frozen=True)
class Location:
    """Where an entry's array lies: ``size`` bytes at ``offset`` of a shard (path relative to the workspace root)."""

    shard: str
    offset: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"shard": self.shard, "offset": int(self.offset), "size": int(self.size)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Location:
        return cls(str(data["shard"]), int(data["offset"]), int(data["size"]))


@dataclass
class StreamArrays:
    """One stream of one video: its array, what made it (JSON-able), and where it was read from (None: the store's
    own ``.npy``)."""

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    at: Location | None = None


class FeatureStore:
    """Per-stream entries under ``<root>/features`` of a workspace (see the module doc)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.join("features")
        self._shard_exists: dict[str, bool] = {}  # per store object: a shard is checked once per video, not per stream

    def _base(self, stream: str, fingerprint: str, key: str) -> str:
        if not is_stream(stream):
            raise ValueError(f"unknown stream {stream!r}; streams are {STREAMS} and extra streams' lower-case names")
        if not _KEY.match(key) or not _FINGERPRINT.match(fingerprint):
            raise ValueError(f"feature store key {key!r} / fingerprint {fingerprint!r} must be lower-case hex")
        return f"{self.root}/{stream}/{fingerprint}/{key[:2]}/{key}"

    def array_path(self, stream: str, fingerprint: str, key: str) -> str:
        return self._base(stream, fingerprint, key) + ".npy"

    def meta_path(self, stream: str, fingerprint: str, key: str) -> str:
        return self._base(stream, fingerprint, key) + ".json"

    def has(self, stream: str, fingerprint: str, key: str) -> bool:
        return self.workspace.exists(self.meta_path(stream, fingerprint, key))

    def _entry(self, stream: str, fingerprint: str, key: str) -> tuple[dict[str, Any], Location | None]:
        """(meta, location) of an entry: location None for an entry whose array is its ``.npy``."""
        path = self.meta_path(stream, fingerprint, key)
        try:
            data = json.loads(self.workspace.read_bytes(path))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"feature store: no {stream} entry {key} ({path})") from exc
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if isinstance(data, dict) and ENTRY_FORMAT in data:
            return dict(data.get("meta") or {}), Location.from_json(data["at"]) if data.get("at") else None
        return data, None

    def location(self, stream: str, fingerprint: str, key: str) -> Location | None:
        """The shard location of an entry's array, None while the array is the store's own ``.npy``."""
        return self._entry(stream, fingerprint, key)[1]

    def shard_exists(self, shard: str) -> bool:
        """Whether the shard (relative to the workspace root) is there; remembered by this store object."""
        if shard not in self._shard_exists:
            self._shard_exists[shard] = self.workspace.exists(self.workspace.join(shard))
        return self._shard_exists[shard]

    def live(self, stream: str, fingerprint: str, key: str) -> bool:
        """The entry exists and its array can be read: its ``.npy``, or the shard it names is there (a dataset
        deleted by hand, not by ``mmcaps rm``, leaves entries naming its shards: those are computed again)."""
        try:
            _, at = self._entry(stream, fingerprint, key)
        except FileNotFoundError:
            return False
        return (
            at is None
            or self.shard_exists(at.shard)
            or self.workspace.exists(self.array_path(stream, fingerprint, key))
        )

    def missing(self, fingerprints: dict[str, str], keys: dict[str, str]) -> list[str]:
        """The streams (in :func:`stream_order`) of one video that the store cannot give yet."""
        return [s for s in stream_order(fingerprints) if not self.live(s, fingerprints[s], keys[s])]

    def put(self, stream: str, fingerprint: str, key: str, entry: StreamArrays) -> None:
        """Store one entry: the array (``np.save`` format), then its meta, each atomically."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(entry.array), allow_pickle=False)
        self.workspace.write_bytes(self.array_path(stream, fingerprint, key), buf.getvalue())
        text = json.dumps(entry.meta, sort_keys=True, separators=(",", ":"))
        self.workspace.write_text(self.meta_path(stream, fingerprint, key), text)

    def meta(self, stream: str, fingerprint: str, key: str) -> dict[str, Any]:
        return self._entry(stream, fingerprint, key)[0]

    def read_at(self, at: Location) -> bytes:
        """The bytes at a location (one ranged read of the shard)."""
        return read_member(self.workspace.fs, self.workspace.join(at.shard), at.offset, at.size)

    def array_bytes(self, stream: str, fingerprint: str, key: str) -> bytes:
        """The entry's array as a ``.npy`` file's bytes (a dataset sample's member is these very bytes)."""
        return self._array(stream, fingerprint, key)[0]

    def _array(self, stream: str, fingerprint: str, key: str) -> tuple[bytes, Location | None]:
        _, at = self._entry(stream, fingerprint, key)
        path = self.array_path(stream, fingerprint, key)
        if at is None:
            try:
                return self.workspace.read_bytes(path), None
            except FileNotFoundError:
                # Another dataset's writer may have just located the entry and deleted the .npy: read where it says.
                _, at = self._entry(stream, fingerprint, key)
                if at is None:
                    raise FileNotFoundError(f"feature store: {stream} entry {key} has no array ({path})") from None
        try:
            return self.read_at(at), at
        except FileNotFoundError:
            try:  # located, but its shard is gone: a .npy a crash left beside the entry still serves
                return self.workspace.read_bytes(path), None
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"feature store: {stream} entry {key}: its shard {at.shard} is gone (extracted again next run)"
                ) from None

    def get(self, stream: str, fingerprint: str, key: str) -> StreamArrays:
        meta = self.meta(stream, fingerprint, key)  # first: without its meta, an array is not an entry
        data, at = self._array(stream, fingerprint, key)
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as exc:
            where = at.shard if at is not None else self.array_path(stream, fingerprint, key)
            raise ValueError(f"{where}: {stream} entry {key} is not a numpy array file ({exc})") from exc
        return StreamArrays(array, meta, at)

    def holds_same(self, stream: str, fingerprint: str, key: str, at: Location) -> bool:
        """Whether ``at`` holds the entry's array byte for byte (an entry without any array: whether ``at`` holds
        a numpy array file of the size it says)."""
        try:
            return self.array_bytes(stream, fingerprint, key) == self.read_at(at)
        except FileNotFoundError:
            return self.read_at(at)[:6] == b"\x93NUMPY"

    def locate(self, stream: str, fingerprint: str, key: str, at: Location) -> int:
        """Record that ``at`` holds the entry's array, then delete its ``.npy``; returns the bytes freed. Call it
        only once the shard is published and holds exactly the ``.npy`` file's bytes there."""
        meta, _ = self._entry(stream, fingerprint, key)
        text = json.dumps({ENTRY_FORMAT: 1, "meta": meta, "at": at.to_json()}, sort_keys=True, separators=(",", ":"))
        self.workspace.write_text(self.meta_path(stream, fingerprint, key), text)
        self._shard_exists[at.shard] = True
        return self._remove(self.array_path(stream, fingerprint, key))

    def forget(self, stream: str, fingerprint: str, key: str) -> int:
        """Delete an entry (its ``.json``, then its ``.npy`` if any); returns the bytes freed."""
        return self._remove(self.meta_path(stream, fingerprint, key)) + self._remove(
            self.array_path(stream, fingerprint, key)
        )

    def _remove(self, path: str) -> int:
        try:
            size = int(self.workspace.fs.size(path))
            self.workspace.fs.rm(path)
        except FileNotFoundError:
            return 0
        return size

    def files(self) -> Iterator[tuple[str, EntryId | None]]:
        """Every file under the store: (path, (stream, fingerprint, key)) — the id None for a file that is not an
        entry's ``.json`` or ``.npy`` (a temporary)."""
        if not self.workspace.exists(self.root):
            return
        strip = len(self.workspace.fs._strip_protocol(self.root)) + 1
        for path in sorted(self.workspace.fs.find(self.root)):
            parts = path[strip:].split("/")
            name = parts[-1]
            key, dot, ext = name.partition(".")
            ok = len(parts) == 4 and dot and ext in ("json", "npy") and is_stream(parts[0]) and _KEY.match(key)
            yield path, ((parts[0], parts[1], key) if ok and _FINGERPRINT.match(parts[1]) else None)


# -- the shards' content index -----------------------------------------------------------------------------------
def index_path(shard: str) -> str:
    """The index beside a shard: ``<name>.tar`` → ``<name>.index.parquet``."""
    return (shard[: -len(".tar")] if shard.endswith(".tar") else shard) + INDEX_SUFFIX


def write_index(workspace: Workspace, shard: str, rows: Sequence[dict[str, Any]]) -> str:
    """Write the index of a published shard (rows of :data:`INDEX_SCHEMA`), atomically; returns its path."""
    path = index_path(shard)
    table = pa.Table.from_pylist(list(rows), schema=INDEX_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    workspace.write_bytes(path, buf.getvalue())
    return path


def read_index(workspace: Workspace, shard: str) -> list[dict[str, Any]] | None:
    """The rows of a shard's index; None when the shard has none (written before shards had one)."""
    path = index_path(shard)
    try:
        data = workspace.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        return pq.read_table(io.BytesIO(data)).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a shard index ({exc})") from exc


def index_rows(sample_key: str, fingerprints: dict[str, str], keys: dict[str, str], offsets: dict[str, Any]) -> list:
    """The index rows of one sample: each stream's member, its entry and where its data lies."""
    rows = []
    for stream in stream_order(fingerprints):
        member = f"{stream_member(stream)}.npy"
        if member in offsets:
            offset, size = offsets[member]
            rows.append({"sample": sample_key, "member": member, "stream": stream, "fingerprint": fingerprints[stream],
                         "entry": keys[stream], "offset": int(offset), "size": int(size)})  # fmt: skip
    return rows


def index_shard(workspace: Workspace, shard: str) -> list[dict[str, Any]]:
    """Build the index of a shard that has none, from its tar headers and each sample's ``meta.json`` (stream
    fingerprints, sha256) and ``captions.json`` (the text key): the arrays' bytes are not read."""
    samples: dict[str, dict[str, Any]] = {}
    for key, member, offset, size, data in member_offsets(shard, workspace.fs):
        samples.setdefault(key, {})[member] = data if data is not None else (offset, size)
    rows = []
    for key, members in samples.items():
        try:
            meta = json.loads(members["meta.json"])
            captions = json.loads(members["captions.json"])
            fps = dict(meta["stream_fingerprints"])
        except (KeyError, ValueError, TypeError):
            continue  # not a sample mmcaps composed from the store: it holds no entry
        keys = stream_keys(str(meta.get("sha256", "")), captions_digest(captions), fps)
        if all(_KEY.match(k) for k in keys.values()) and all(_FINGERPRINT.match(str(v)) for v in fps.values()):
            rows += index_rows(key, fps, keys, {m: v for m, v in members.items() if isinstance(v, tuple)})
    return rows


__all__ = [
    "INDEX_SCHEMA",
    "STREAMS",
    "STREAM_MEMBERS",
    "EntryId",
    "FeatureStore",
    "Location",
    "StreamArrays",
    "index_path",
    "index_rows",
    "index_shard",
    "is_stream",
    "read_index",
    "stream_keys",
    "stream_member",
    "stream_order",
    "write_index",
]
