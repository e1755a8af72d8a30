"""Reading released pickles and torch files without executing them: a restricted unpickler.

The public HowTo100M and AVLnet evaluation features are pickles (``youcook_val.pkl``, AVLnet's
``*_audio.pkl``) and torch files (``MSRVTT_JSFUSION_test.pth``) that their own loaders read with ``pickle.load``
and ``torch.load``, which run whatever the file names. :func:`load` reads them with an unpickler that admits only
what those files are made of and builds everything else never:

- numpy arrays, dtypes and scalars, by the names numpy 1.x and 2.x write under pickle protocols 0-5
  (``numpy.core.multiarray._reconstruct``, ``numpy._core.numeric._frombuffer``, ``numpy.ndarray``, ``numpy.dtype``,
  ``numpy.core.multiarray.scalar``, ...); ``numpy.core.*`` and ``numpy._core.*`` name the same functions;
- plain containers (``bytes``, ``bytearray``, ``set``, ``frozenset``, ``complex``, ``collections.OrderedDict``;
  ``__builtin__`` and ``builtins`` alike) and ``_codecs.encode`` for the latin-1 text that protocol 0-2 pickles
  of ``bytes`` hold (other codecs are refused);
- torch tensors, decoded here into numpy arrays: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` over
  ``torch.<T>Storage`` persistent ids, in both torch file formats (the legacy stream of torch < 1.6 and the zip
  archive of later versions) and inside plain pickles, where a storage is ``torch.storage._load_from_bytes(b)``.
  That function is ``torch.load(b)`` with no restriction; it is never called: its bytes (a legacy torch stream)
  are decoded by this module, under the same rules.

Anything else — ``os.system``, a class of the writer's program, a pandas frame — stops the load before it is built,
with :class:`RefusedPickle`: one line naming the file and the object it would have built. Torch is not imported.

Python 2 pickles (protocol 0-2 ``str`` holding array bytes) fail under Python 3's default ASCII decoding; they are
read again with ``encoding="latin1"`` (what numpy expects of array data), and the text they hold is then decoded as
UTF-8 where it is valid UTF-8 (Python 2 ``str`` held encoded bytes), else kept as latin-1.
"""

from __future__ import annotations

import collections
import importlib
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

ADMITTED_HELP = "numpy arrays, dtypes and scalars, plain containers and torch tensors"
TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a legacy torch.save stream
TORCH_PROTOCOL = 1001

# torch storage classes → numpy dtypes (BFloat16 has no numpy dtype: its bits are widened to float32 below)
_STORAGE_DTYPES = {
    "HalfStorage": np.float16,
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "BFloat16Storage": np.uint16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class RefusedPickle(ValueError):
    """A pickle that would build something outside what :func:`load` admits; nothing of it was built."""


def _numpy_core(submodule: str) -> Any:
    """``numpy._core.<submodule>`` on numpy 2, ``numpy.core.<submodule>`` on numpy 1 (no deprecation warning)."""

    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ModuleNotFoundError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


def _latin1_only(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol 0-2 pickles of ``bytes`` call it (latin-1); any other codec is refused."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} (only latin1 is admitted)")
    return text.encode("latin-1", errors)


def _plain_globals() -> dict[tuple[str, str], Any]:
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_only,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    for builtins_name in ("__builtin__", "builtins"):
        for kind in (bytes, bytearray, set, frozenset, complex):
            table[(builtins_name, kind.__name__)] = kind
    return table


# -- torch, without torch ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _StorageType:
    """What ``torch.<T>Storage`` stands for while unpickling: the element dtype of a storage."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    """A storage named by a persistent id, its elements filled in once they are read (1-D numpy array)."""

    key: str
    type: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    """A tensor over a storage whose elements come later in the stream (legacy format)."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _tensor_array(storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """A tensor view (element offset and strides) over a 1-D storage, copied out as a contiguous numpy array."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(s < 0 for s in (*size, *stride)) or offset < 0:
        raise pickle.UnpicklingError(f"tensor with negative size/stride/offset {size} {stride} {offset}")
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.shape[0]:
            raise pickle.UnpicklingError(f"tensor {size} at offset {offset} exceeds its storage of {storage.shape[0]}")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:] if 0 not in size else storage[:0], shape=size, strides=[s * item for s in stride]
    )
    return np.array(view, copy=True)


def _bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor(storage: Any, offset: int, size: tuple, stride: tuple, *_rest: Any) -> Any:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``."""
    if isinstance(storage, _Storage):
        if storage.data is None:
            return _Tensor(storage, int(offset), tuple(size), tuple(stride))
        array = storage.data
        bf16 = storage.type.name == "BFloat16Storage"
    elif isinstance(storage, _DecodedStorage):
        array, bf16 = storage.data, storage.bfloat16
    else:
        raise pickle.UnpicklingError(f"tensor over a {type(storage).__name__}, not a storage")
    out = _tensor_array(array, int(offset), tuple(size), tuple(stride))
    return _bfloat16_to_float32(out) if bf16 else out


@dataclass
class _DecodedStorage:
    """A storage decoded from ``_load_from_bytes``: its elements (1-D) and whether they are bfloat16 bits."""

    data: np.ndarray
    bfloat16: bool = False


# -- the unpicklers ---------------------------------------------------------------------------------------------
class _Restricted(pickle.Unpickler):
    """Admits :func:`_plain_globals` (and, with ``torch``, the tensor machinery above); refuses everything else."""

    def __init__(self, file: IO[bytes], *, where: str, encoding: str, torch: bool, storages: dict | None = None):
        super().__init__(file, encoding=encoding)
        self.where = where
        self.torch = torch
        self.storages: dict[str, _Storage] = storages if storages is not None else {}
        self.globals = _plain_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self.globals.get((module, name))
        if found is not None:
            return found
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch.storage" and name == "_load_from_bytes":
            return self._load_from_bytes
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise RefusedPickle(
            f"{self.where}: refused to unpickle: it would build {module}.{name} (only {ADMITTED_HELP} are admitted)"
        )

    def _load_from_bytes(self, data: bytes) -> _DecodedStorage:
        """``torch.storage._load_from_bytes``: a legacy torch stream holding one storage, decoded here."""
        if not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError("torch.storage._load_from_bytes needs bytes")
        obj = _legacy_stream(io.BytesIO(bytes(data)), where=self.where, encoding="ASCII")
        if not isinstance(obj, _DecodedStorage):
            raise pickle.UnpicklingError(f"a pickled torch storage held a {type(obj).__name__}")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        # Only torch's storages are persistent ids: ('storage', <T>Storage, key, location, numel[, view])
        if not (self.torch and isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise RefusedPickle(f"{self.where}: refused to unpickle: persistent id {str(pid)[:80]!r} is not a storage")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _StorageType):
            raise RefusedPickle(f"{self.where}: refused to unpickle: storage of type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError(f"storage views are not supported (storage {key})")
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type, numel)
        return self.storages[key]


def _resolve(obj: Any, depth: int = 0) -> Any:
    """Replace storage and tensor placeholders by numpy arrays, through plain containers."""
    if depth > 200:
        raise pickle.UnpicklingError("containers nested more than 200 deep")
    if isinstance(obj, _Tensor):
        if obj.storage.data is None:
            raise pickle.UnpicklingError(f"storage {obj.storage.key} has no data")
        out = _tensor_array(obj.storage.data, obj.offset, obj.size, obj.stride)
        return _bfloat16_to_float32(out) if obj.storage.type.name == "BFloat16Storage" else out
    if isinstance(obj, _Storage):
        if obj.data is None:
            raise pickle.UnpicklingError(f"storage {obj.key} has no data")
        return _DecodedStorage(obj.data, obj.type.name == "BFloat16Storage")
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _resolve(v, depth + 1)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _resolve(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v, depth + 1) for v in obj)
    return obj


def _plain(obj: Any) -> Any:
    """A decoded storage at the top of a result is its elements."""
    if isinstance(obj, _DecodedStorage):
        return _bfloat16_to_float32(obj.data) if obj.bfloat16 else obj.data
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, _plain(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def _read_elements(fh: IO[bytes], storage: _Storage, where: str) -> None:
    head = fh.read(8)
    if len(head) != 8:
        raise pickle.UnpicklingError(f"storage {storage.key}: truncated (no element count)")
    (count,) = struct.unpack("<q", head)
    nbytes = count * storage.type.dtype.itemsize
    if count < 0 or count != storage.numel:
        raise pickle.UnpicklingError(f"storage {storage.key}: {count} elements, its id says {storage.numel}")
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise pickle.UnpicklingError(f"storage {storage.key}: truncated ({len(data)} of {nbytes} bytes)")
    storage.data = np.frombuffer(data, dtype=storage.type.dtype.newbyteorder("<")).astype(storage.type.dtype)


def _legacy_stream(fh: IO[bytes], *, where: str, encoding: str) -> Any:
    """A legacy ``torch.save`` stream: magic, protocol, system info, the object, its storage keys, their elements."""

    def plain() -> Any:
        return _Restricted(fh, where=where, encoding=encoding, torch=False).load()

    if plain() != TORCH_MAGIC:
        raise pickle.UnpicklingError("not a torch stream (bad magic number)")
    if plain() != TORCH_PROTOCOL:
        raise pickle.UnpicklingError("unsupported torch stream protocol")
    info = plain()
    if not isinstance(info, dict) or not info.get("little_endian", True):
        raise pickle.UnpicklingError("big-endian torch streams are not supported")
    body = _Restricted(fh, where=where, encoding=encoding, torch=True)
    obj = body.load()
    keys = plain()
    if not isinstance(keys, list) or set(map(str, keys)) != set(body.storages):
        raise pickle.UnpicklingError("storage keys do not match the storages the stream names")
    for key in keys:
        _read_elements(fh, body.storages[str(key)], where)
    return _resolve(obj)


def _torch_zip(data: bytes, *, where: str) -> Any:
    """A torch >= 1.6 zip archive: ``<root>/data.pkl`` whose storages are the entries ``<root>/data/<key>``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise pickle.UnpicklingError("a torch zip archive without one <root>/data.pkl")
        root = pkl[0].split("/", 1)[0]
        order = archive.read(f"{root}/byteorder").decode().strip() if f"{root}/byteorder" in names else "little"
        if order != "little":
            raise pickle.UnpicklingError("big-endian torch archives are not supported")
        body = _Restricted(io.BytesIO(archive.read(pkl[0])), where=where, encoding="ASCII", torch=True)
        obj = body.load()
        for key, storage in body.storages.items():
            raw = archive.read(f"{root}/data/{key}")
            nbytes = storage.numel * storage.type.dtype.itemsize
            if len(raw) < nbytes:
                raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes, {nbytes} needed")
            storage.data = np.frombuffer(raw[:nbytes], dtype=storage.type.dtype.newbyteorder("<")).astype(
                storage.type.dtype
            )
    return _resolve(obj)


def _fix_py2_text(obj: Any, depth: int = 0) -> Any:
    """Text read from a Python 2 ``str`` with latin-1: as UTF-8 where its bytes are valid UTF-8."""
    if depth > 200:
        return obj
    if isinstance(obj, str):
        try:
            return obj.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return obj
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((_fix_py2_text(k), _fix_py2_text(v, depth + 1)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {_fix_py2_text(k): _fix_py2_text(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fix_py2_text(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_fix_py2_text(v, depth + 1) for v in obj)
    return obj


def _load_plain_or_legacy(data: bytes, where: str, encoding: str) -> Any:
    fh = io.BytesIO(data)
    first = _Restricted(fh, where=where, encoding=encoding, torch=True).load()
    if type(first) is int and first == TORCH_MAGIC:
        return _legacy_stream(io.BytesIO(data), where=where, encoding=encoding)
    return _plain(_resolve(first))


def loads(data: bytes, *, where: str = "pickle") -> Any:
    """Decode a pickle, a legacy torch stream or a torch zip archive held in ``data`` (see the module doc).

    Tensors come back as numpy arrays. Raises :class:`RefusedPickle` for anything not admitted and ValueError
    (naming ``where``) for a damaged or truncated file.
    """
    try:
        if data[:4] == b"PK\x03\x04":
            return _plain(_torch_zip(data, where=where))
        try:
            return _load_plain_or_legacy(data, where, "ASCII")
        except UnicodeDecodeError:  # a Python 2 pickle: its str held bytes
            return _fix_py2_text(_load_plain_or_legacy(data, where, "latin1"))
    except RefusedPickle:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{where}: not a readable pickle or torch file ({type(exc).__name__}: {exc})") from None


def load(path: str | os.PathLike[str], *, opener: Callable[[str], IO[bytes]] | None = None) -> Any:
    """Read a pickle or torch file safely (:func:`loads`); errors name ``path``. ``opener`` (e.g. an fsspec
    ``fs.open``) reads remote files."""
    name = os.fspath(path)
    try:
        if opener is not None:
            with opener(name) as fh:
                data = fh.read()
        else:
            with open(name, "rb") as fh:
                data = fh.read()
    except OSError as exc:
        raise FileNotFoundError(f"{name}: cannot read ({exc})") from exc
    return loads(data, where=name)


__all__ = ["ADMITTED_HELP", "RefusedPickle", "load", "loads"]
