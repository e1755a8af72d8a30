"""WebDataset tar shards: a writer that refuses malformed samples and publishes shards atomically, and a strict reader.

A sample is a dict with ``__key__`` (a safe name, ``[A-Za-z0-9_-]+``) and members ``name.ext`` → bytes; the tar
holds ``<key>.<member>`` entries, so any WebDataset reader (``webdataset.WebDataset(urls)``) reads the shards.

Every shard is written under a temporary name (``Workspace`` TMP_MARKER convention, so
``Workspace.remove_temporaries`` finds what a crash left) and renamed into place only when it is complete:
a reader never sees half a shard.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from typing import IO, Any

import fsspec

from storage.workspace import Workspace

_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# Every member's mtime: a constant, so the same samples give the same shard bytes on any host and at any time (when
# a video was extracted is the manifest's extracted_at). An int: a float mtime costs every member a PAX header
# (1 KB more per member: 6 KB per sample, the store's 4 entries again).
MEMBER_MTIME = 0
_MODE = 0o444  # members are read-only, as webdataset's TarWriter writes them
_BLOCK = 512  # tar block size: every member costs one header block plus its data rounded up to blocks


class _TarStream:
    """Samples as ``<key>.<member>`` entries of an uncompressed tar stream (what webdataset's ``TarWriter`` writes,
    without importing webdataset, which imports torch): members in sorted order, mode 0444, constant mtime."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._tar = tarfile.open(fileobj=fh, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115 -- closed in close()

    def write(self, sample: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """Append the sample's members; returns where each member's data lies: name → (byte offset, size)."""
        key = sample["__key__"]
        where: dict[str, tuple[int, int]] = {}
        for name in sorted(k for k in sample if not k.startswith("_")):
            data = bytes(sample[name])
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size, info.mtime, info.mode = len(data), MEMBER_MTIME, _MODE
            self._tar.addfile(info, io.BytesIO(data))
            # tarfile counts what it wrote: the header (PAX records included), then the data padded to blocks.
            where[name] = (self._tar.offset - -(-len(data) // _BLOCK) * _BLOCK, len(data))
        return where

    def close(self) -> None:
        self._tar.close()


def check_sample(sample: dict[str, Any]) -> str:
    """Validate a raw sample; return its key. Raises ValueError saying what is wrong."""
    if not isinstance(sample, dict):
        raise ValueError(f"a sample must be a dict, got {type(sample).__name__}")
    key = sample.get("__key__")
    if not isinstance(key, str) or not key:
        raise ValueError(f"sample has no __key__ (members {sorted(k for k in sample if not k.startswith('_'))})")
    if not _SAFE_KEY.fullmatch(key):
        # A dot or slash in the key would split differently when read back (WebDataset splits at the first dot).
        raise ValueError(f"sample key {key!r} must match [A-Za-z0-9_-]+ (use storage.safe_name)")
    members = [k for k in sample if not k.startswith("_")]
    if not members:
        raise ValueError(f"sample {key!r} has no members")
    for name in members:
        value = sample[name]
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ValueError(f"sample {key!r}: member {name!r} is {type(value).__name__}, not bytes")
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"sample {key!r}: bad member name {name!r}")
    return key


def sample_nbytes(sample: dict[str, Any]) -> int:
    """Bytes the sample occupies in an uncompressed tar (header block + data rounded up to blocks, per member)."""
    total = 0
    for name, value in sample.items():
        if name.startswith("_"):
            continue
        total += _BLOCK + -(-len(value) // _BLOCK) * _BLOCK
    return total


class ShardWriter:
    """Write samples into ``<folder>/<prefix>-<n:06d>.tar``, a new shard every ``max_count`` samples or ``max_bytes``.

    A shard is closed once it holds ``max_count`` samples or at least ``max_bytes`` (so one sample larger than
    ``max_bytes`` gets a shard of its own). ``write`` returns the final path of the shard that will hold the sample;
    ``close`` publishes the last shard and returns every final path, in order. A key may appear once per shard.
    After each ``write``, ``offsets`` says where the sample's members lie in its shard (member → (offset, size)),
    so a reader can fetch one member with a ranged read (:func:`read_member`).
    Usable as a context manager; leaving it with an exception discards the open shard (its temporary is removed).
    """

    def __init__(
        self,
        folder: str,
        prefix: str,
        max_count: int = 1000,
        max_bytes: int = 512 << 20,
        workspace: Workspace | None = None,
        *,
        start_index: int = 0,
    ) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(f"max_count and max_bytes must be positive, got {max_count}, {max_bytes}")
        if not _SAFE_KEY.fullmatch(prefix):
            raise ValueError(f"shard prefix {prefix!r} must match [A-Za-z0-9_-]+")
        self.workspace = workspace if workspace is not None else Workspace(folder.rsplit("/", 1)[0] or "/")
        self.folder = folder.rstrip("/")
        self.prefix = prefix
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.index = start_index
        self.paths: list[str] = []
        self._stack: ExitStack | None = None
        self._tar: _TarStream | None = None
        self._keys: set[str] = set()
        self._bytes = 0
        self._closed = False
        self.offsets: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _path(self, index: int) -> str:
        return f"{self.folder}/{self.prefix}-{index:06d}.tar"

    def _open(self) -> None:
        stack = ExitStack()
        fh = stack.enter_context(self.workspace.atomic_open(self._path(self.index), "wb"))
        self._tar = _TarStream(fh)
        self._stack = stack
        self._keys = set()
        self._bytes = 0

    def _finish(self) -> None:
        """Close the open shard and rename it into place."""
        assert self._tar is not None and self._stack is not None
        self._tar.close()
        self._stack.close()  # atomic_open renames the temporary onto the final name here
        self.paths.append(self._path(self.index))
        self.index += 1
        self._tar = self._stack = None

    def write(self, sample: dict[str, Any]) -> str:
        """Append one sample (``__key__`` + members as bytes); returns the final path of its shard."""
        if self._closed:
            raise ValueError("ShardWriter is closed")
        key = check_sample(sample)
        if self._tar is None:
            self._open()
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r} in shard {self._path(self.index)}")
        assert self._tar is not None
        self.offsets = self._tar.write(sample)
        self._keys.add(key)
        self._bytes += sample_nbytes(sample)
        path = self._path(self.index)
        if len(self._keys) >= self.max_count or self._bytes >= self.max_bytes:
            self._finish()
        return path

    def close(self) -> list[str]:
        """Publish the open shard (if any) and return the final paths of all shards written."""
        if not self._closed:
            if self._tar is not None:
                self._finish()
            self._closed = True
        return list(self.paths)

    def abort(self) -> None:
        """Discard the open shard (its temporary is removed); shards already published stay."""
        if self._stack is not None:
            try:
                if self._tar is not None:
                    self._tar.close()  # flush tarfile's buffer now, or its finaliser writes to a closed file later
                # Raising inside atomic_open's context makes it delete the temporary instead of renaming it.
                self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            finally:
                self._tar = self._stack = None
        self._closed = True


def write_shard(path: str, samples: list[dict[str, Any]], workspace: Workspace) -> str:
    """Write ``samples`` as one tar at ``path`` atomically (temporary name, then rename); returns ``path``."""
    keys = [check_sample(s) for s in samples]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in samples for {path}")
    with workspace.atomic_open(path, "wb") as fh:
        tar = _TarStream(fh)
        for sample in samples:
            tar.write(sample)
        tar.close()
    return path


def read_member(fs: fsspec.AbstractFileSystem, path: str, offset: int, size: int) -> bytes:
    """The ``size`` bytes at ``offset`` of a shard: one member's data, by a ranged read (one request on S3).

    Raises FileNotFoundError when the shard is gone, ValueError when it is shorter than the range."""
    try:
        data = fs.cat_file(path, start=offset, end=offset + size)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"shard {path}: no such file") from exc
    if len(data) != size:
        raise ValueError(f"shard {path}: {len(data)} of the {size} bytes at offset {offset}")
    return bytes(data)


def member_offsets(path: str, fs: fsspec.AbstractFileSystem) -> Iterator[tuple[str, str, int, int, bytes | None]]:
    """Every file member of a shard as (key, member, data offset, size, data), reading headers only: ``data`` is
    read for the small JSON members (``*.json``) and None for the others (their bytes are skipped, not read).

    For shards written before shards had an index (:func:`storage.features.index_shard`); raises ValueError naming
    the shard when it is not a tar archive."""
    with fs.open(path, "rb") as fh:
        try:
            tar = tarfile.open(fileobj=fh, mode="r:", tarinfo=_StrictTarInfo)  # noqa: SIM115 (closed by the with)
        except tarfile.TarError as exc:
            raise ValueError(f"shard {path}: not a tar archive ({exc})") from exc
        with tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, member = _split_member(info.name)
                data = tar.extractfile(info).read() if member.endswith(".json") else None  # type: ignore[union-attr]
                yield key, member, info.offset_data, info.size, data


class _StrictTarInfo(tarfile.TarInfo):
    """Treat an archive that stops without its end-of-archive blocks as damaged (tarfile would stop silently)."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tf)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as exc:
            raise tarfile.ReadError(f"archive is truncated or damaged at byte {tf.offset} ({exc})") from exc


def _split_member(name: str) -> tuple[str, str]:
    """``dir/key.rgb2d.npy`` → (``dir/key``, ``rgb2d.npy``): WebDataset splits at the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    key, dot, member = base.partition(".")
    if not dot or not key or not member:
        raise ValueError(f"member {name!r} is not <key>.<ext>")
    return (f"{folder}/{key}" if folder else key), member


def iter_shard(path: str, fs: fsspec.AbstractFileSystem | None = None) -> Iterator[dict[str, Any]]:
    """Yield the raw samples of one shard: ``{"__key__": key, member: bytes, ...}``, in file order.

    Errors (missing file, damaged or truncated tar, a member that is not ``<key>.<ext>``, a key that appears in two
    separate runs) raise ValueError naming the shard and the member.
    """
    if fs is None:
        fs, path = fsspec.core.url_to_fs(str(path))
    current: dict[str, Any] | None = None
    seen: set[str] = set()
    last = "<start of archive>"
    try:
        fh = fs.open(path, "rb")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"shard {path}: no such file") from exc
    with fh:
        try:
            tar = tarfile.open(fileobj=fh, mode="r|", tarinfo=_StrictTarInfo)  # noqa: SIM115 (closed by the with below)
        except tarfile.TarError as exc:
            raise ValueError(f"shard {path}: not a tar archive ({exc})") from exc
        with tar:
            while True:
                try:
                    info = tar.next()
                    if info is None:
                        break
                    last = info.name
                    if not info.isfile():
                        continue
                    data = tar.extractfile(info).read()  # type: ignore[union-attr]
                    if len(data) != info.size:
                        raise tarfile.ReadError(f"member has {len(data)} of {info.size} bytes")
                except (tarfile.TarError, EOFError, OSError) as exc:
                    raise ValueError(f"shard {path}: cannot read member {last!r}: {exc}") from exc
                try:
                    key, member = _split_member(info.name)
                except ValueError as exc:
                    raise ValueError(f"shard {path}: {exc}") from exc
                if current is not None and key != current["__key__"]:
                    yield current
                    current = None
                if current is None:
                    if key in seen:
                        raise ValueError(f"shard {path}: key {key!r} appears twice (member {info.name!r})")
                    seen.add(key)
                    current = {"__key__": key}
                if member in current:
                    raise ValueError(f"shard {path}: member {info.name!r} appears twice")
                current[member] = data
    if current is not None:
        yield current
