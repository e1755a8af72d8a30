"""Where videos come from: discovery in a source, video ids, and caption pairing.

A source is a folder (searched recursively by extension), a text file of paths (one a line, ``#`` comments,
relative paths relative to the file), an fsspec URL of either, a single video, or a list of paths. A video's id is
its file stem; two videos with the same id (or ids that map to the same shard key) are an error naming both.

Captions, per video, first match wins: the HowTo100M ``caption.json`` given by ``captions=``; a subtitle file
beside the video (``name.vtt``, ``name.en.vtt``, ``name.<lang>.vtt``, then ``.srt``); the CSV
``video_id,start,end,text`` given by ``captions=``. A video with none is kept (it serves localisation only).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.extract.captions import (
    find_subtitle,
    pick_subtitle,
    read_captions_csv,
    read_howto100m_json,
    read_subtitle,
)
from storage.sample import Captions
from storage.workspace import safe_name

# What a folder's video files end with: for training sources and benchmark video folders alike.
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp")
SUBTITLE_EXTENSIONS = (".vtt", ".srt")

SourceLike = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class VideoSource:
    """One discovered video: its id, where it is (path or URL as given) and its captions (None when it has none)."""

    video_id: str
    source: str
    captions: Captions | None = None
    caption_source: str = ""  # the file the captions came from, for messages
    error: str = ""  # set when the video cannot be extracted as found: it gets a failed row
    warning: str = ""  # a problem that keeps the video (an unreadable subtitle: extracted without captions)
    subtitle_unread: bool = False  # captions are in the subtitle file caption_source, not read yet (read_captions)


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _fs_path(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, stripped = fsspec.core.url_to_fs(path)
    return fs, stripped


def _with_protocol(fs: fsspec.AbstractFileSystem, original: str, stripped: str) -> str:
    """Give a path found by ``fs.find`` the protocol of the URL it came from (fsspec strips it)."""
    if not is_url(original):
        return stripped
    return fs.unstrip_protocol(stripped)


def _is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _read_path_list(fs: fsspec.AbstractFileSystem, path: str, original: str) -> list[str]:
    try:
        with fs.open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{original}: a list of video paths must be UTF-8 text ({exc})") from exc
    base = original.rsplit("/", 1)[0] if "/" in original else "."
    out = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not is_url(entry) and not os.path.isabs(entry):
            entry = f"{base}/{entry}" if is_url(original) else os.path.normpath(os.path.join(base, entry))
        out.append(entry)
    return out


@dataclass(frozen=True)
class Listing:
    """What discovery found: the videos, and for a folder its subtitle files, so that each video's subtitle is
    found in the listing (no request per video; :func:`pick_subtitle`'s rule)."""

    videos: list[str]
    # "<folder>/<stem>" → the subtitle file names in <folder> that may belong to a video named <stem> (each name is
    # filed under every prefix ending before a dot: "a.en.vtt" under "a" and "a.en"); None for lists of paths
    subtitles: dict[str, list[str]] | None = None

    def subtitle(self, video: str) -> str | None:
        """The subtitle file beside ``video`` (path or URL, as the videos are given), or None."""
        if self.subtitles is None:
            return find_subtitle_any(video)
        folder, _, name = video.rpartition("/")
        stem = name.rpartition(".")[0]  # a listed video has a video extension
        found = pick_subtitle(stem, self.subtitles.get(f"{folder}/{stem}", ()))
        return f"{folder}/{found}" if found is not None else None


def _folder_listing(fs: fsspec.AbstractFileSystem, path: str, original: str) -> Listing:
    """The videos (sorted) and subtitles under a folder: locally one ``scandir`` a folder (fsspec's ``find`` stats
    every file; as it does, symlinked folders are not followed), elsewhere one ``find``."""
    if isinstance(fs, LocalFileSystem):
        folders: Iterable[tuple[str, Iterable[str]]] = ((root, files) for root, _, files in os.walk(path))
    else:
        grouped: dict[str, list[str]] = {}
        for file in fs.find(path):
            folder, _, name = _with_protocol(fs, original, file).rpartition("/")
            grouped.setdefault(folder, []).append(name)
        folders = grouped.items()
    videos: list[str] = []
    subtitles: dict[str, list[str]] = {}
    for folder, files in folders:
        for name in files:
            if _is_video(name):
                videos.append(f"{folder}/{name}")
            elif name.endswith(SUBTITLE_EXTENSIONS):
                for end in (i for i, c in enumerate(name) if c == "."):
                    subtitles.setdefault(f"{folder}/{name[:end]}", []).append(name)
    return Listing(sorted(videos), subtitles)


def list_videos(source: SourceLike, *, allow_empty: bool = False) -> Listing:
    """:func:`discover_videos` with the folders' subtitle files (for :func:`list_sources`)."""
    if isinstance(source, (list, tuple)):
        return Listing([str(p) for p in source])
    original = os.fspath(source)  # type: ignore[arg-type]
    if not is_url(original):
        original = str(Path(original.removeprefix("file://")).expanduser().absolute())
    fs, path = _fs_path(original)
    if not fs.exists(path):
        raise FileNotFoundError(f"source {original}: no such file or folder")
    if fs.isdir(path):
        listing = _folder_listing(fs, path, original)
        if not listing.videos and not allow_empty:
            raise ValueError(f"source {original}: no videos ({', '.join(VIDEO_EXTENSIONS)}) in the folder")
        return listing
    if _is_video(path):
        return Listing([original])
    return Listing(_read_path_list(fs, path, original))


def discover_videos(source: SourceLike, *, allow_empty: bool = False) -> list[str]:
    """Video paths or URLs in ``source`` (see module doc), sorted for folders, in given order for lists.

    Raises FileNotFoundError naming the source when it does not exist, ValueError when a folder holds no video
    (unless ``allow_empty``: a benchmark's folder may lack every video, which evaluation reports itself).
    """
    return list_videos(source, allow_empty=allow_empty).videos


def video_id_for(path: str) -> str:
    """The video id of a path or URL: its file stem (``/a/b/xyz.mp4`` → ``xyz``)."""
    name = path.replace("\\", "/").rstrip("/").rpartition("/")[2]
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    if not stem:
        raise ValueError(f"{path}: cannot derive a video id from the file name")
    return stem


def assign_ids(paths: Sequence[str]) -> list[tuple[str, str]]:
    """``[(video_id, path)]``; two paths with one id, or ids with one shard key, raise ValueError naming both."""
    by_id: dict[str, str] = {}
    by_key: dict[str, tuple[str, str]] = {}
    out = []
    for path in paths:
        vid = video_id_for(path)
        if vid in by_id:
            raise ValueError(f"video id {vid!r} is used by two files: {by_id[vid]} and {path}")
        key = safe_name(vid, what="video id")
        if key in by_key:
            other_id, other = by_key[key]
            raise ValueError(
                f"video ids {other_id!r} ({other}) and {vid!r} ({path}) map to the same shard key {key!r}; rename one"
            )
        by_id[vid] = path
        by_key[key] = (vid, path)
        out.append((vid, path))
    return out


@contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path for ``path``: itself when local, else a temporary download (removed on exit)."""
    if not is_url(path):
        yield path
        return
    fs, stripped = _fs_path(path)
    suffix = "".join(PurePosixPath(stripped).suffixes[-2:])
    with tempfile.TemporaryDirectory(prefix="mmcaps-src-") as tmp:
        local = os.path.join(tmp, "file" + suffix)
        fs.get(stripped, local)
        yield local


def find_subtitle_any(video: str) -> str | None:
    """A subtitle beside ``video`` (local: every language the extraction library knows; URL: name[.en].vtt|srt)."""
    if not is_url(video):
        found = find_subtitle(video)
        return str(found) if found is not None else None
    fs, stripped = _fs_path(video)
    base = stripped.rsplit(".", 1)[0]
    for ext in SUBTITLE_EXTENSIONS:
        for candidate in (base + ext, f"{base}.en{ext}"):
            if fs.exists(candidate):
                return fs.unstrip_protocol(candidate)
    return None


def read_caption_table(path: str) -> tuple[str, dict[str, Captions]]:
    """Read the ``captions=`` file: HowTo100M JSON (``.json``) or CSV (``.csv``). Returns (kind, {video_id: Captions})."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"captions {path}: expected a HowTo100M caption .json or a video_id,start,end,text .csv")
    with local_copy(path) as local:
        if not os.path.exists(local):
            raise FileNotFoundError(f"captions {path}: no such file")
        try:
            table = read_howto100m_json(local) if suffix == ".json" else read_captions_csv(local)
        except Exception as exc:  # ExtractError names the file; re-raise as the user error it is
            raise ValueError(str(exc)) from exc
    return ("json" if suffix == ".json" else "csv"), table


def read_subtitle_file(path: str) -> Captions:
    with local_copy(path) as local:
        return read_subtitle(local)


def list_sources(source: SourceLike, *, captions: str | os.PathLike[str] | None = None) -> list[VideoSource]:
    """Discover the videos of ``source``, give them ids and find each one's captions (see module doc) without
    reading subtitle files: a video whose captions are in a subtitle file has ``caption_source`` set and
    ``subtitle_unread``; :func:`read_captions` reads it. A ``captions=`` file that cannot be parsed raises ValueError
    naming it."""
    listing = list_videos(source)
    pairs = assign_ids(listing.videos)
    kind, table = ("", {})
    caption_path = ""
    if captions is not None:
        caption_path = os.fspath(captions)
        kind, table = read_caption_table(caption_path)
    out = []
    for vid, path in pairs:
        if kind == "json" and vid in table:
            out.append(VideoSource(vid, path, table[vid], caption_path))
        elif (subtitle := listing.subtitle(path)) is not None:
            out.append(VideoSource(vid, path, None, subtitle, subtitle_unread=True))
        elif kind == "csv" and vid in table:
            out.append(VideoSource(vid, path, table[vid], caption_path))
        else:
            out.append(VideoSource(vid, path, None, ""))
    return out


def read_captions(video: VideoSource) -> VideoSource:
    """``video`` with its subtitle file read (itself when there is none to read). A file that cannot be read (not
    UTF-8 nor any encoding tried, a malformed cue) keeps the video without captions and gives it a ``warning``
    naming the file: the video is still worth its visual and audio features, and fixing the file re-encodes text
    only."""
    if not video.subtitle_unread:
        return video
    subtitle = video.caption_source
    try:
        caps = read_subtitle_file(subtitle)
    except Exception as exc:  # the extraction library raises ExtractError naming the file
        message = " ".join(str(exc).split())
        if os.path.basename(subtitle) not in message:
            message = f"{subtitle}: {message}"
        return replace(video, subtitle_unread=False, warning=f"captions not read: {message}")
    return replace(video, captions=caps, subtitle_unread=False)


def load_sources(source: SourceLike, *, captions: str | os.PathLike[str] | None = None) -> list[VideoSource]:
    """:func:`list_sources` with every subtitle file read (:func:`read_captions`)."""
    return [read_captions(v) for v in list_sources(source, captions=captions)]
