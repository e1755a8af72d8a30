"""Where a layout keeps each video's feature files, and which videos it lists.

Two layouts, each checked against the public code that writes or reads it:

- :class:`VfeLayout` — antoine77340/video_feature_extractor writes one ``.npy`` per video and stream, at the path
  its input CSV names; HowTo100M's training README puts the 2D and the 3D features in two folders under the same
  relative path and lists them in its training CSV (``video_id``, ..., ``path``). Videos are either every ``.npy``
  under the 2D folder (id: the file stem) or the rows of such a CSV (``video_id`` and ``path`` or
  ``feature_path``; an optional ``duration`` column, seconds, which ``mmcaps export`` writes). A path without
  ``.npy`` finds ``<path>.npy`` (``np.save`` appends it). ``audio``, when given, is a third folder of the same
  relative paths holding mmcaps log-mel ``[40, Ta]`` (what ``mmcaps export`` writes; the public extractor has no
  audio).
- :class:`AvlnetLayout` — roudimit/AVLnet's ``training.md``: a list file (header ``path``, lines
  ``category/sub/<video_id>``, a leading ``None/`` dropped as its loader does) and, per line,
  ``<root>/<path>/<video_id>_2d.npz`` and ``_3d.npz`` (key ``features``) and ``<audio root>/<path>/<video_id>
  _spec.npz`` (key ``arr_0``); ``<root>/<path>_2d.npz`` (the issue's and everything_at_once's spelling) is found too.

Captions come from a HowTo100M ``caption.json``/``raw_caption.json`` joined by video id
(:func:`pipeline.extract.captions.read_howto100m_json`); a video without is kept (localisation only).

A missing 2D or 3D file (the extractor writes nothing for a one-frame video) is the video's error, naming the file;
a missing audio file means the video has no audio.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.extract.captions import read_howto100m_json
from storage.sample import Captions
from storage.workspace import safe_name

EXPORT_FILE = "export.json"  # what `mmcaps export` leaves in its folder: the layout's folders and files


@dataclass(frozen=True)
class ImportItem:
    """One video a layout lists: its feature files by stream (present ones), captions, and what is wrong."""

    video_id: str
    files: dict[str, str]  # stream -> path; rgb2d and rgb3d always, audio when there is one
    captions: Captions | None = None
    duration_s: float | None = None  # from the listing, when it has a duration column
    error: str = ""  # one line naming the file: a listed video that cannot be imported as found


@dataclass(frozen=True)
class VfeLayout:
    """video_feature_extractor output (see the module doc)."""

    features_2d: str
    features_3d: str
    audio: str | None = None
    listing: str | None = None  # CSV with video_id and path (relative to both folders); None: walk features_2d
    name: str = field(default="vfe", init=False)

    @classmethod
    def from_export(cls, folder: str | os.PathLike[str]) -> tuple[VfeLayout, str | None, str | None]:
        """The layout of a folder ``mmcaps export --layout vfe`` wrote, with its captions file and recipe (each
        None when the export has none)."""
        root = Path(folder)
        path = root / EXPORT_FILE
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{root}: no {EXPORT_FILE} (not a folder written by mmcaps export)") from None
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if info.get("layout") != "vfe":
            raise ValueError(f"{path}: layout {info.get('layout')!r}, not vfe")
        files = info.get("files") or {}

        def at(key: str) -> str | None:
            return str(root / files[key]) if files.get(key) else None

        layout = cls(at("rgb2d") or str(root / "feature_2d"), at("rgb3d") or str(root / "feature_3d"),
                     at("audio"), at("listing"))  # fmt: skip
        return layout, at("captions"), at("recipe")

    def folders(self) -> list[str]:
        return [p for p in (self.features_2d, self.features_3d, self.audio, self.listing) if p]


@dataclass(frozen=True)
class AvlnetLayout:
    """AVLnet's training layout (see the module doc)."""

    features: str
    listing: str
    audio: str | None = None  # root of the _spec.npz files; None: the features root (AVLnet's default)
    name: str = field(default="avlnet", init=False)

    def folders(self) -> list[str]:
        return [p for p in (self.features, self.listing, self.audio) if p]


AnyLayout = VfeLayout | AvlnetLayout


def _npy(path: str) -> str:
    """``path``, or ``path.npy`` where only that exists (``np.save`` appends the suffix)."""
    if not path.endswith(".npy") and not os.path.exists(path) and os.path.exists(path + ".npy"):
        return path + ".npy"
    return path


def _csv_rows(path: str) -> list[tuple[int, dict[str, str]]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read the listing ({exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    return [(reader.line_num, {k: (v or "").strip() for k, v in row.items() if k}) for row in reader]


def _vfe_items(layout: VfeLayout) -> list[tuple[str, str, float | None, str]]:
    """(video_id, relative path, duration, listing place) per video of a vfe layout, in listing order."""
    if layout.listing is None:
        root = Path(layout.features_2d)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: 2D feature folder not found")
        return [(p.stem, p.relative_to(root).as_posix(), None, str(p)) for p in sorted(root.rglob("*.npy"))]
    rows = _csv_rows(layout.listing)
    if rows and ("video_id" not in rows[0][1] or not ({"path", "feature_path"} & set(rows[0][1]))):
        raise ValueError(f"{layout.listing}: the listing needs columns video_id and path (or feature_path)")
    out = []
    for line, row in rows:
        rel = row.get("path") or row.get("feature_path") or ""
        if not row.get("video_id") or not rel:
            raise ValueError(f"{layout.listing}:{line}: empty video_id or path")
        if os.path.isabs(rel):
            raise ValueError(f"{layout.listing}:{line}: path {rel!r} must be relative to the 2D and 3D folders")
        duration = None
        if row.get("duration"):
            try:
                duration = float(row["duration"])
            except ValueError:
                raise ValueError(f"{layout.listing}:{line}: duration {row['duration']!r} is not a number") from None
        out.append((row["video_id"], rel, duration, f"{layout.listing}:{line}"))
    return out


def _avlnet_items(layout: AvlnetLayout) -> list[tuple[str, str, float | None, str]]:
    rows = _csv_rows(layout.listing)
    if rows and "path" not in rows[0][1]:
        raise ValueError(f"{layout.listing}: the list needs the header 'path' (as HowTo100M_1166_videopaths.txt)")
    out = []
    for line, row in rows:
        rel = row["path"].removeprefix("None/").strip("/")  # AVLnet's loader drops a leading None/
        if not rel:
            raise ValueError(f"{layout.listing}:{line}: empty path")
        out.append((rel.rsplit("/", 1)[-1], rel, None, f"{layout.listing}:{line}"))
    return out


def _avlnet_file(root: str, rel: str, suffix: str) -> str:
    """``<root>/<path>/<id><suffix>`` (AVLnet's loader), else ``<root>/<path><suffix>``; the first when neither."""
    vid = rel.rsplit("/", 1)[-1]
    first = os.path.join(root, rel, vid + suffix)
    second = os.path.join(root, rel + suffix)
    return second if not os.path.exists(first) and os.path.exists(second) else first


def discover(layout: AnyLayout, captions: str | os.PathLike[str] | None = None) -> list[ImportItem]:
    """The videos ``layout`` lists, each with its files, captions and (for a missing visual file) error.

    Two videos with the same id, or ids that map to the same shard key, are an error naming both places.
    """
    by_id = read_howto100m_json(captions) if captions else {}
    if isinstance(layout, VfeLayout):
        listed = _vfe_items(layout)
    elif isinstance(layout, AvlnetLayout):
        listed = _avlnet_items(layout)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    items: list[ImportItem] = []
    seen: dict[str, str] = {}
    for video_id, rel, duration, place in listed:
        key = safe_name(video_id, what="video id")
        if key in seen:
            raise ValueError(
                f"video id {video_id!r} listed twice (or two ids with the shard key {key}): {seen[key]}, {place}"
            )
        seen[key] = place
        if isinstance(layout, VfeLayout):
            files = {"rgb2d": _npy(os.path.join(layout.features_2d, rel)),
                     "rgb3d": _npy(os.path.join(layout.features_3d, rel))}  # fmt: skip
            audio = _npy(os.path.join(layout.audio, rel)) if layout.audio else None
        else:
            files = {"rgb2d": _avlnet_file(layout.features, rel, "_2d.npz"),
                     "rgb3d": _avlnet_file(layout.features, rel, "_3d.npz")}  # fmt: skip
            audio = _avlnet_file(layout.audio or layout.features, rel, "_spec.npz")
        absent = [f"{s} file {p} not found" for s, p in files.items() if not os.path.isfile(p)]
        if audio and os.path.isfile(audio):
            files["audio"] = audio
        items.append(
            ImportItem(
                video_id=video_id,
                files=files,
                captions=by_id.get(video_id),
                duration_s=duration,
                error=f"{video_id}: " + "; ".join(absent) if absent else "",
            )
        )
    return items
