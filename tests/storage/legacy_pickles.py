"""Pickle writers that follow the public releases' writers byte for byte in what matters to a reader: the global
names, the opcodes for text and bytes, the reduce tuples.

- :func:`numpy2_pickle`: this interpreter and numpy 2 (``numpy._core.*`` names), protocols 0-5.
- :func:`numpy1_pickle`: Python 3 with numpy 1.x: the same reduce tuples under ``numpy.core.*`` names (numpy 1
  wrote them; numpy 2 reads them), ``_codecs.encode`` for ``bytes`` at protocols 0-2, ``_frombuffer`` at 5.
- :func:`py2_pickle`: Python 2.7 with numpy 1.16 (what a 2019 release made with ``pickle.dump`` under Python 2
  holds): protocols 0-2, every ``str`` and array payload a Python 2 ``str`` (``STRING``/``BINSTRING`` opcodes
  holding raw bytes, text UTF-8 encoded), dtype arguments ``('f4', 0, 1)``. Python 3 reads these only with
  ``encoding="latin1"``.

Torch tensors inside pickles and ``torch.save`` files are written by torch itself (the real writer): its pickling
of a tensor (``_rebuild_tensor_v2`` over ``_load_from_bytes`` of a legacy stream) is the same in 2.x as in 1.4,
which AVLnet used.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np


class Global:
    """A global reference written by module and name, whether or not this interpreter has it."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # the pickler requires a callable in a reduce tuple; never called
        raise TypeError(f"{self.module}.{self.name} stands for a global of another interpreter")


def _renamed(value: Any, core: str) -> Any:
    """Functions from ``numpy._core`` named from ``core`` instead (numpy 1 wrote ``numpy.core``)."""
    module = getattr(value, "__module__", "") or ""
    if callable(value) and module.startswith("numpy._core"):
        return Global(module.replace("numpy._core", core, 1), value.__name__)
    return value


class _Writer(pickle._Pickler):  # the pure-Python pickler: its opcodes can be chosen one by one
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: io.BytesIO, protocol: int, *, core: str, py2: bool) -> None:
        super().__init__(file, protocol, fix_imports=True)
        self.core, self.py2 = core, py2

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Global):
            return obj.name  # a string: save_global below writes it
        if isinstance(obj, np.dtype) and self.py2:
            state = obj.__reduce__()[2]
            return (Global("numpy", "dtype"), (obj.str[1:] if obj.str[0] in "<>|=" else obj.str, 0, 1), state)
        if isinstance(obj, (np.ndarray, np.generic)):
            fn, args, *rest = obj.__reduce_ex__(self.proto)
            args = tuple(_renamed(a, self.core) for a in args)
            return (_renamed(fn, self.core), args, *rest)
        return NotImplemented

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if not isinstance(obj, Global):
            return super().save_global(obj, name)
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + obj.module.encode() + b"\n" + obj.name.encode() + b"\n")
        self.memoize(obj)

    def _save_py2_str(self, data: bytes) -> None:
        """A Python 2 ``str``: STRING (protocol 0) or (SHORT_)BINSTRING holding the raw bytes."""
        if self.proto == 0:
            self.write(pickle.STRING + b"'" + codecs.escape_encode(data)[0] + b"'\n")
        elif len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)

    def save_bytes(self, obj: bytes) -> None:
        if not self.py2:
            return pickle._Pickler.save_bytes(self, obj)
        self._save_py2_str(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        if not self.py2:
            return pickle._Pickler.save_str(self, obj)
        self._save_py2_str(obj.encode("utf-8"))  # a Python 2 str literal holds the source's (UTF-8) bytes
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _dumps(obj: Any, protocol: int, *, core: str, py2: bool) -> bytes:
    buf = io.BytesIO()
    _Writer(buf, protocol, core=core, py2=py2).dump(obj)
    return buf.getvalue()


def numpy2_pickle(obj: Any, protocol: int) -> bytes:
    """``pickle.dumps(obj, protocol)`` here (Python 3, numpy 2)."""
    return pickle.dumps(obj, protocol=protocol)


def numpy1_pickle(obj: Any, protocol: int) -> bytes:
    """What Python 3 with numpy 1.x writes for ``obj`` at ``protocol`` (0-5)."""
    return _dumps(obj, protocol, core="numpy.core", py2=False)


def py2_pickle(obj: Any, protocol: int = 2) -> bytes:
    """What Python 2.7 with numpy 1.16 writes for ``obj`` at ``protocol`` (0-2)."""
    if protocol > 2:
        raise ValueError("Python 2 pickles have protocols 0-2")
    return _dumps(obj, protocol, core="numpy.core", py2=True)


WRITERS = {"py2-numpy1": py2_pickle, "py3-numpy1": numpy1_pickle, "py3-numpy2": numpy2_pickle}
PROTOCOLS = {"py2-numpy1": (0, 1, 2), "py3-numpy1": (0, 1, 2, 3, 4, 5), "py3-numpy2": (0, 1, 2, 3, 4, 5)}
