"""The restricted unpickler: released-feature pickles and torch files read back exactly, from every writer the
releases could have used; anything else is refused before it is built."""

from __future__ import annotations

import collections
import fractions
import io
import os
import pickle

import numpy as np
import pytest
import torch

from storage.safe_pickle import RefusedPickle, load, loads
from tests.storage.legacy_pickles import PROTOCOLS, WRITERS, py2_pickle


def _record() -> list[dict]:
    """A list of clip dicts like howto100m's youcook_val.pkl, with the odd members real files hold."""
    rng = np.random.default_rng(0)
    return [
        {
            "2d": rng.normal(size=2048).astype(np.float32),
            "3d": rng.normal(size=2048).astype(np.float16),
            "caption": "crème brûlée torch sugar",  # non-ASCII: a Python 2 str holds its UTF-8 bytes
            "id": "xHr8X2Wpmno_3",
            "2d_full": np.zeros((0, 2048), dtype=np.float16),  # an empty clip, as the extractor writes
            "fortran": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
            "n": np.int64(7),
            "start": 1.5,
            "tags": ["a", "b"],
        }
    ]


CASES = [(writer, protocol) for writer in WRITERS for protocol in PROTOCOLS[writer]]


@pytest.mark.parametrize(("writer", "protocol"), CASES, ids=[f"{w}-p{p}" for w, p in CASES])
def test_numpy_pickles_of_every_writer_read_back_exactly(writer, protocol, tmp_path):
    want = _record()
    path = tmp_path / "youcook_val.pkl"
    path.write_bytes(WRITERS[writer](want, protocol))
    (got,) = load(path)
    assert set(got) == set(want[0])
    for key in ("2d", "3d", "2d_full", "fortran"):
        assert got[key].dtype == want[0][key].dtype and got[key].shape == want[0][key].shape
        assert got[key].tobytes() == want[0][key].tobytes()
    assert got["fortran"].flags["F_CONTIGUOUS"]
    assert got["n"] == 7 and got["start"] == 1.5 and got["tags"] == ["a", "b"]
    assert got["caption"] == "crème brûlée torch sugar" and got["id"] == "xHr8X2Wpmno_3"


def test_python2_pickles_need_latin1_which_plain_pickle_lacks():
    data = py2_pickle(_record(), 2)
    assert data[:2] == b"\x80\x02"
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)  # what howto100m's loader does under Python 3
    assert loads(data)[0]["caption"] == "crème brûlée torch sugar"


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_avlnet_records_with_torch_tensors_decode_without_torch_load(protocol, tmp_path):
    # AVLnet's youcook_val_audio.pkl: pickle.dump of dicts whose 'audio' is a torch.Tensor [40, T]
    audio = torch.from_numpy(np.random.default_rng(1).normal(size=(40, 37)).astype(np.float16))
    strided = torch.arange(24, dtype=torch.float32).reshape(4, 6)[:, 1:5]  # a view: offset and strides
    rec = [{"2d": np.ones(2048, np.float32), "3d": np.ones(2048, np.float32), "audio": audio, "view": strided,
            "caption": "add oil", "id": "vid_0"}]  # fmt: skip
    path = tmp_path / "youcook_val_audio.pkl"
    path.write_bytes(pickle.dumps(rec, protocol=protocol))
    (got,) = load(path)
    assert isinstance(got["audio"], np.ndarray) and got["audio"].dtype == np.float16
    assert got["audio"].tobytes() == audio.numpy().tobytes()
    np.testing.assert_array_equal(got["view"], strided.numpy())


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy-2019", "zip"])
def test_torch_save_files_of_the_msrvtt_layout_decode(zip_format, tmp_path):
    # howto100m's MSRVTT_JSFUSION_test.pth: {'2d': {video_id: Tensor[2048]}, '3d': {...}}
    rng = np.random.default_rng(2)
    feats = {k: {f"video{i}": torch.from_numpy(rng.normal(size=2048).astype(np.float32)) for i in (7020, 9770)}
             for k in ("2d", "3d")}  # fmt: skip
    feats["2d"]["half"] = torch.ones(5, dtype=torch.float16)
    feats["3d"]["bf16"] = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    path = tmp_path / "MSRVTT_JSFUSION_test.pth"
    torch.save(feats, path, _use_new_zipfile_serialization=zip_format)
    assert path.read_bytes()[:2] == (b"PK" if zip_format else b"\x80\x02")
    got = load(path)
    for k in ("2d", "3d"):
        for vid in ("video7020", "video9770"):
            assert got[k][vid].tobytes() == feats[k][vid].numpy().tobytes()
    assert got["2d"]["half"].dtype == np.float16
    np.testing.assert_array_equal(got["3d"]["bf16"], np.array([1.5, -2.0], np.float32))


class _System:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "youcook_val.pkl"
    path.write_bytes(pickle.dumps([{"2d": np.ones(3), "evil": _System(str(marker))}], protocol=2))
    with pytest.raises(RefusedPickle) as err:
        load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert f"{os.system.__module__}.system" in message  # posix.system: the object it would have built
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (fractions.Fraction(1, 3), "fractions.Fraction"),
        (collections.Counter("ab"), "collections.Counter"),
        (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
        (print, "builtins.print"),
    ],
    ids=["fraction", "counter", "module", "builtin-function"],
)
def test_a_pickle_holding_a_non_array_class_is_refused(payload, named, tmp_path):
    path = tmp_path / "features.pkl"
    path.write_bytes(pickle.dumps({"2d": np.zeros(2), "x": payload}, protocol=4))
    with pytest.raises(RefusedPickle, match=rf"{path}: refused to unpickle: it would build {named} "):
        load(path)


def test_a_torch_file_holding_a_module_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"2d": {"v": torch.ones(2)}, "net": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(RefusedPickle, match=r"torch\.nn\.modules\.linear\.Linear"):
        load(path)


def test_codecs_other_than_latin1_and_foreign_persistent_ids_are_refused():
    # _codecs.encode('x', 'rot13') — admitted for latin1 only
    rot = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(ValueError, match="rot13"):
        loads(rot, where="rot.pkl")

    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "ext" if obj == "x" else None

    buf = io.BytesIO()
    WithPid(buf, 2).dump(["x"])
    with pytest.raises(RefusedPickle, match="persistent id 'ext'"):
        loads(buf.getvalue(), where="pid.pkl")


def test_truncated_files_give_one_line_naming_the_file(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(_record(), protocol=4)[:5000])
    with pytest.raises(ValueError, match=rf"^{path}: not a readable pickle or torch file") as err:
        load(path)
    assert "\n" not in str(err.value)
    legacy = io.BytesIO()
    torch.save({"2d": torch.ones(100)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="truncated"):
        loads(legacy.getvalue()[:-40], where="cut.pth")
