"""The per-video sample: what extraction produces, what a shard stores and what training reads.

One :class:`VideoFeatures` is one WebDataset sample (storage/README.md "Shard sample"):

==================  =======================  =================================================================
member              dtype, shape             meaning
==================  =======================  =================================================================
``rgb2d.npy``       float16 [T2, 2048]       ResNet-152 pooled, 1 frame per second, rows L2-normalised
``rgb3d.npy``       float16 [T3, 2048]       3D ResNeXt-101, 16-frame windows at 24 fps (1.5 / s), rows L2-normed
``mel.npy``         float16 [40, Ta]         log-mel, 100 frames per second; [40, 0] when there is no audio
``w2v.npy``         float16 [N, 300]         per caption, max over its in-vocabulary word vectors
``<name>.npy``      float16 [T, dim]         an extra stream (``ExtractConfig.streams``: ``clip``, ``s3d``...), rows
                                             L2-normalised; its rate and window in ``meta.json``'s ``streams.<name>``
``captions.json``   {start, end, text}       seconds, as HowTo100M's caption.json
``meta.json``       dict                     source id, sha256, duration, fps, has_audio, weights, precision,
                                             ffmpeg build, stream fingerprints, what made each stream
==================  =======================  =================================================================

A dataset's sample is composed from the feature store's per-stream entries (:meth:`VideoFeatures.from_streams`),
the one place that writes a sample's ``meta.json``. It holds no time stamp, so the same inputs and config give the
same shard bytes on any host (when a video was extracted is the manifest's ``extracted_at``).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from storage.workspace import safe_name

ARRAY_MEMBERS = ("rgb2d", "rgb3d", "mel", "w2v")
PAPER_STREAMS = ("rgb2d", "rgb3d", "audio", "text")  # the streams every sample holds (as storage.features.STREAMS)


@dataclass
class Captions:
    """Timed captions of one video, in seconds. ``end`` may equal ``start`` for a point caption."""

    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (len(self.start) == len(self.end) == len(self.text)):
            raise ValueError(
                f"captions need equal lengths, got start={len(self.start)} end={len(self.end)} text={len(self.text)}"
            )

    def __len__(self) -> int:
        return len(self.text)

    def to_json(self) -> dict[str, list]:
        return {"start": [float(x) for x in self.start], "end": [float(x) for x in self.end], "text": list(self.text)}

    def digest(self) -> str:
        """sha256 (hex) of the captions' canonical JSON: times and text, so an edited caption changes it."""
        return captions_digest(self.to_json())

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Captions:
        return cls(
            start=[float(x) for x in data.get("start", [])],
            end=[float(x) for x in data.get("end", [])],
            text=[str(x) for x in data.get("text", [])],
        )


def captions_digest(captions: Captions | dict[str, Any] | None) -> str:
    """:meth:`Captions.digest` of captions, their ``to_json()`` dict, or None (no captions: the empty digest)."""
    if captions is None:
        captions = Captions()
    data = captions.to_json() if isinstance(captions, Captions) else Captions.from_json(captions).to_json()
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _npy_load(data: bytes, *, where: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a damaged header
        raise ValueError(f"{where}: not a valid .npy member ({exc})") from exc


@dataclass
class VideoFeatures:
    """Everything extracted from one video. Arrays are float16 as stored on disk."""

    video_id: str
    rgb2d: np.ndarray  # float16 [T2, 2048]
    rgb3d: np.ndarray  # float16 [T3, 2048]
    mel: np.ndarray  # float16 [40, Ta]; [40, 0] without audio
    w2v: np.ndarray  # float16 [N, 300], one row per caption
    captions: Captions
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # extra streams by name: float16 [T, dim] each

    @property
    def key(self) -> str:
        """The WebDataset key: the video id with characters outside ``[A-Za-z0-9_-]`` replaced."""
        return safe_name(self.video_id, what="video id")

    @property
    def has_audio(self) -> bool:
        return self.mel.ndim == 2 and self.mel.shape[1] > 0

    @property
    def row_streams(self) -> tuple[str, ...]:
        """The streams of feature rows over time this sample holds: ``rgb2d``, ``rgb3d``, then its extra streams."""
        return ("rgb2d", "rgb3d", *sorted(self.extra))

    def stream(self, name: str) -> np.ndarray:
        """The rows ``[T, dim]`` of stream ``name`` (``rgb2d``, ``rgb3d`` or an extra stream); a stream this sample
        lacks raises ``ValueError`` naming the ones it has."""
        if name in ("rgb2d", "rgb3d"):
            return getattr(self, name)
        if name not in self.extra:
            raise ValueError(
                f"video {self.video_id!r} has no stream {name!r}; its streams are {', '.join(self.row_streams)}"
            )
        return self.extra[name]

    def to_sample(self) -> dict[str, Any]:
        """The WebDataset sample: ``__key__`` plus encoded members (bytes)."""
        if len(self.captions) != self.w2v.shape[0]:
            raise ValueError(f"{self.video_id}: {len(self.captions)} captions but {self.w2v.shape[0]} w2v rows")
        meta = dict(self.meta)
        meta.setdefault("video_id", self.video_id)
        sample: dict[str, Any] = {"__key__": self.key}
        for name in ARRAY_MEMBERS:
            array = np.ascontiguousarray(getattr(self, name), dtype=np.float16)
            sample[f"{name}.npy"] = _npy_bytes(array)
        for name in sorted(self.extra):
            if name in ARRAY_MEMBERS:
                raise ValueError(f"{self.video_id}: extra stream {name!r} would overwrite the member {name}")
            sample[f"{name}.npy"] = _npy_bytes(np.ascontiguousarray(self.extra[name], dtype=np.float16))
        sample["captions.json"] = json.dumps(self.captions.to_json()).encode("utf-8")
        sample["meta.json"] = json.dumps(meta, sort_keys=True).encode("utf-8")
        return sample

    @classmethod
    def from_streams(
        cls,
        *,
        video_id: str,
        captions: Captions,
        arrays: dict[str, np.ndarray],
        metas: dict[str, dict[str, Any]],
        identity: dict[str, Any],
    ) -> VideoFeatures:
        """A sample from per-stream entries: ``arrays``/``metas`` keyed by stream (``rgb2d``, ``rgb3d``, ``audio``,
        ``text``, and any extra stream; see :mod:`storage.features`), ``identity`` the video's source, sha256, size and
        fingerprints.

        ``meta.json`` gets the identity, each stream's meta under ``streams``, and the flat fields readers use:
        duration, frame rate and size (from the visual streams' probe), ``has_audio``, the weights of every stream,
        precision and ffmpeg build, caption counts.
        """
        visual = metas.get("rgb2d") or metas.get("rgb3d") or {}
        probe = dict(visual.get("probe") or metas.get("audio", {}).get("probe") or {})
        mel = arrays["audio"]
        text = metas.get("text", {})
        extra = {name: array for name, array in arrays.items() if name not in PAPER_STREAMS}
        dims = {"rgb2d": int(arrays["rgb2d"].shape[1]), "rgb3d": int(arrays["rgb3d"].shape[1])}
        dims["w2v"] = int(arrays["text"].shape[1])
        dims.update({name: int(array.shape[1]) for name, array in extra.items()})  # the paper's samples: unchanged
        meta = {
            **identity,
            "video_id": video_id,
            "duration_s": float(probe.get("duration_s") or 0.0),
            "fps": probe.get("fps"),
            "width": probe.get("width"),
            "height": probe.get("height"),
            "has_audio": bool(mel.ndim == 2 and mel.shape[1] > 0),
            "weights": {s: metas.get(s, {}).get("weights", "") for s in ("rgb2d", "rgb3d", "text")},
            "precision": visual.get("precision", ""),
            "ffmpeg": visual.get("ffmpeg", ""),
            "n_captions": len(captions),
            "n_captions_oov": int(text.get("n_captions_oov", 0)),
            "dims": dims,
            "streams": {s: metas[s] for s in sorted(metas)},
        }  # fmt: skip
        return cls(
            video_id=video_id,
            rgb2d=arrays["rgb2d"],
            rgb3d=arrays["rgb3d"],
            mel=mel,
            w2v=arrays["text"],
            captions=captions,
            meta=meta,
            extra=extra,
        )

    @classmethod
    def from_sample(cls, sample: dict[str, Any], *, where: str = "sample") -> VideoFeatures:
        """Decode a raw sample (member name → bytes) as read from a shard; errors name ``where`` and the member."""
        key = sample.get("__key__", "?")
        missing = [m for m in (*[f"{n}.npy" for n in ARRAY_MEMBERS], "captions.json", "meta.json") if m not in sample]
        if missing:
            raise ValueError(f"{where}: sample {key!r} lacks members {missing}")
        arrays = {n: _npy_load(sample[f"{n}.npy"], where=f"{where}: {key}/{n}.npy") for n in ARRAY_MEMBERS}
        extra = {
            m[: -len(".npy")]: _npy_load(sample[m], where=f"{where}: {key}/{m}")
            for m in sorted(sample)
            if m.endswith(".npy") and m[: -len(".npy")] not in ARRAY_MEMBERS
        }
        try:
            captions = Captions.from_json(json.loads(sample["captions.json"]))
            meta = json.loads(sample["meta.json"])
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: sample {key!r} has a bad JSON member ({exc})") from exc
        return cls(video_id=str(meta.get("video_id", key)), captions=captions, meta=meta, extra=extra, **arrays)
