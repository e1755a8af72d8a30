"""Caption readers: HowTo100M JSON, WebVTT, SRT and CSV, all returning :class:`pipeline.features.Captions`.

Rules shared by every reader (documented here because they change what training sees):

- Encoding: UTF-8, with or without a byte-order mark; UTF-16 when the file starts with a UTF-16 BOM. Any other
  bytes that are not valid UTF-8 raise :class:`ExtractError` naming the file and the byte offset (no guessing of
  legacy code pages: a wrong guess would silently put garbage words into the text features).
- Line ends: CRLF, CR and LF are all accepted.
- Empty files (zero bytes or whitespace only) hold no captions: ``Captions()`` or ``{}``.
- Missing end times (an empty or absent ``end``, or one before its ``start``): the caption ends where the next
  caption of the same video starts; the last one becomes a point caption (``end == start``).
- WebVTT/SRT markup is removed: inline timing tags (``<00:00:01.500>``), ``<c>``/``<i>``/``<b>``/``<v Name>``
  tags, ``{\\an8}`` style codes, and the HTML entities ``&amp; &lt; &gt; &nbsp; &quot; &#39;``.
- Rolling captions (YouTube auto-generated subtitles repeat the previous line at the top of each cue, and add
  10 ms cues that only repeat it): a cue line equal to a line of the previous cue is dropped, and a cue with no
  new line adds no caption. Consecutive cues that genuinely say the same line twice are therefore merged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.extract.errors import ExtractError
from storage.sample import Captions

_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})(?:[.,](\d{1,3}))?")
_ARROW = re.compile(r"^\s*(\S+)\s*-->\s*(\S+)")
_TAG = re.compile(r"<[^>]*>")
_STYLE = re.compile(r"\{\\[^}]*\}")
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&nbsp;": " ", "&quot;": '"', "&#39;": "'", "&apos;": "'"}


def read_text(path: str | os.PathLike[str]) -> str:
    """The file's text under the encoding rules above, with line ends normalised to ``\\n``."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ExtractError(f"{path}: cannot read caption file ({exc})") from exc
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        codec = "utf-16"
    else:
        codec = "utf-8-sig"
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as exc:
        raise ExtractError(
            f"{path}: caption file is not valid UTF-8 (bad byte {raw[exc.start : exc.start + 1]!r} at offset "
            f"{exc.start}); convert it, e.g. iconv -f cp1252 -t utf-8"
        ) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_timestamp(text: str, *, where: str = "caption") -> float:
    """``HH:MM:SS.mmm``, ``MM:SS.mmm`` or ``HH:MM:SS,mmm`` → seconds."""
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise ExtractError(f"{where}: bad timestamp {text!r}")
    hours, minutes, seconds, frac = m.groups()
    value = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    if frac:
        value += int(frac) / (10 ** len(frac))
    return float(value)


def _clean_line(line: str) -> str:
    line = _STYLE.sub("", _TAG.sub("", line))
    for entity, char in _ENTITIES.items():
        line = line.replace(entity, char)
    return " ".join(line.split())


def _fill_missing_ends(start: list[float], end: list[float | None]) -> list[float]:
    out = []
    for i, (s, e) in enumerate(zip(start, end, strict=True)):
        if e is None or not math.isfinite(e) or e < s:
            nxt = start[i + 1] if i + 1 < len(start) and start[i + 1] >= s else s
            e = nxt
        out.append(float(e))
    return out


def _cues_to_captions(cues: Sequence[Cue]) -> Captions:
    """Merge rolling duplicates: keep only cue lines not shown in the previous cue."""
    starts, ends, texts = [], [], []
    previous: set[str] = set()
    for cue in cues:
        start, end = cue.start, cue.end
        cleaned = [c for c in (_clean_line(x) for x in cue.lines) if c]
        new = [c for c in cleaned if c not in previous]
        previous = set(cleaned)
        if new:
            starts.append(start)
            ends.append(end)
            texts.append(" ".join(new))
    return Captions(start=starts, end=_fill_missing_ends(starts, ends), text=texts)


class CueError(ExtractError):
    """A timing line that does not parse; ``line`` is its 1-based number, ``problem`` the message without the file."""

    def __init__(self, where: str, line: int, problem: str) -> None:
        super().__init__(f"{where}:{line}: {problem}")
        self.line = line
        self.problem = problem


@dataclass(frozen=True)
class Cue:
    """One timed cue of a WebVTT or SRT file.

    ``line`` is the 1-based number of its ``start --> end`` line; ``lines`` are the raw text lines after it (text
    line ``i`` is file line ``line + 1 + i``); ``ident`` is the cue identifier before the timing line (SRT's number,
    a WebVTT id), or None.
    """

    line: int
    start: float
    end: float
    lines: tuple[str, ...]
    ident: str | None = None


@dataclass(frozen=True)
class CueFile:
    """The cues of a subtitle text, and the non-empty lines that belong to no cue (``stray``: ``(line, text)``;
    a WebVTT header and NOTE blocks land there, in an SRT file they are malformed blocks)."""

    cues: tuple[Cue, ...]
    stray: tuple[tuple[int, str], ...]


def parse_cues(text: str, *, where: str) -> CueFile:
    """Cues of a subtitle text (line ends already ``\\n``): a timing line (``start --> end``) and the lines after it
    up to an empty line or the next timing line. The one SRT/WebVTT cue grammar of the project: subtitles
    (:func:`read_srt`, :func:`read_vtt`) and the Mining YouTube annotations are read with it.

    Lines holding only spaces do not end a cue (YouTube cues start with one). A line just before a timing line that
    follows a blank line is a cue identifier (SRT numbers, WebVTT ids). A timing line that does not parse raises
    :class:`CueError` naming ``where`` and the line.
    """
    cues: list[Cue] = []
    stray: list[tuple[int, str]] = []
    current: list[str] | None = None  # text lines of the open cue; None between cues
    head: tuple[int, float, float, str | None] | None = None  # the open cue's line, start, end, ident

    def close() -> None:
        if head is not None:
            cues.append(Cue(head[0], head[1], head[2], tuple(current or ()), head[3]))

    for number, line in enumerate(text.split("\n"), start=1):
        if "-->" in line:
            m = _ARROW.match(line)
            if not m:
                raise CueError(where, number, f"bad timing line {line!r}")
            ident = None
            if (
                current is not None
                and current
                and current[-1].strip()
                and (len(current) == 1 or not current[-2].strip())
            ):
                ident = current.pop()  # the identifier of this cue, absorbed after a whitespace-only separator
            elif stray and stray[-1][0] == number - 1:
                ident = stray.pop()[1]
            close()
            try:
                start = parse_timestamp(m.group(1), where=f"{where}:{number}")
                end = parse_timestamp(m.group(2), where=f"{where}:{number}")
            except ExtractError:
                raise CueError(where, number, f"bad timestamp in {line.strip()!r}") from None
            current = []
            head = (number, start, end, None if ident is None else ident.strip())
        elif line == "":
            close()
            current, head = None, None  # WEBVTT header, NOTE/STYLE blocks and ids outside cues are stray
        elif current is not None:
            current.append(line)
        elif line.strip():
            stray.append((number, line))
    close()
    return CueFile(tuple(cues), tuple(stray))


def read_vtt(path: str | os.PathLike[str]) -> Captions:
    """WebVTT (including YouTube auto-generated rolling captions) → Captions."""
    text = read_text(path)
    if not text.strip():
        return Captions()
    if not text.lstrip().startswith("WEBVTT"):
        raise ExtractError(f"{path}: not a WebVTT file (no WEBVTT header)")
    return _cues_to_captions(parse_cues(text, where=str(path)).cues)


def read_srt(path: str | os.PathLike[str]) -> Captions:
    """SubRip (.srt) → Captions (same markup and rolling-duplicate rules as WebVTT)."""
    text = read_text(path)
    if not text.strip():
        return Captions()
    return _cues_to_captions(parse_cues(text, where=str(path)).cues)


def _number_or_none(value: object) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _text(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""  # HowTo100M's caption.json holds a few NaN texts
    return str(value)


def read_howto100m_json(path: str | os.PathLike[str]) -> dict[str, Captions]:
    """HowTo100M ``caption.json`` / ``raw_caption.json``: ``{video_id: {"start": [], "end": [], "text": []}}``."""
    text = read_text(path)
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExtractError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ExtractError(f"{path}: expected an object {{video_id: {{start, end, text}}}}")
    out = {}
    for vid, entry in data.items():
        if not isinstance(entry, dict) or "start" not in entry or "text" not in entry:
            raise ExtractError(f"{path}: video {vid!r} lacks 'start'/'text' lists")
        starts = [_number_or_none(x) for x in entry["start"]]
        ends_raw = entry.get("end") or [None] * len(starts)
        texts = [_text(x) for x in entry["text"]]
        if not (len(starts) == len(texts) == len(ends_raw)):
            raise ExtractError(f"{path}: video {vid!r} has lists of different lengths")
        if any(s is None for s in starts):
            raise ExtractError(f"{path}: video {vid!r} has a caption without a start time")
        ends = [_number_or_none(x) for x in ends_raw]
        out[str(vid)] = Captions(start=starts, end=_fill_missing_ends(starts, ends), text=texts)  # type: ignore[arg-type]
    return out


def read_captions_csv(path: str | os.PathLike[str]) -> dict[str, Captions]:
    """CSV with header ``video_id,start,end,text`` (end may be empty) → {video_id: Captions}, rows sorted by start."""
    text = read_text(path)
    if not text.strip():
        return {}
    reader = csv.DictReader(io.StringIO(text))
    need = {"video_id", "start", "end", "text"}
    if reader.fieldnames is None or not need <= {f.strip() for f in reader.fieldnames}:
        raise ExtractError(f"{path}: CSV needs the columns video_id,start,end,text (got {reader.fieldnames})")
    rows: dict[str, list[tuple[float, float | None, str]]] = {}
    for line_no, row in enumerate(reader, start=2):
        row = {k.strip(): v for k, v in row.items() if k is not None}
        start = _number_or_none(row.get("start"))
        if start is None:
            raise ExtractError(f"{path}: line {line_no}: bad start time {row.get('start')!r}")
        rows.setdefault(row["video_id"].strip(), []).append((start, _number_or_none(row.get("end")), row["text"] or ""))
    out = {}
    for vid, items in rows.items():
        items.sort(key=lambda r: r[0])
        starts = [r[0] for r in items]
        out[vid] = Captions(
            start=starts, end=_fill_missing_ends(starts, [r[1] for r in items]), text=[r[2] for r in items]
        )
    return out


def pick_subtitle(stem: str, names: Iterable[str]) -> str | None:
    """The subtitle, among the file ``names`` of a video's folder, that belongs to the video named ``stem``, as
    downloaders name them: ``stem.vtt``, ``stem.en.vtt``, ``stem.<lang>.vtt``, then the same for ``.srt``; English
    first, then any other language in name order. The one rule for a folder's listing and for :func:`find_subtitle`."""
    candidates = {name for name in names if name.startswith(stem + ".")}
    for ext in (".vtt", ".srt"):
        for name in (stem + ext, f"{stem}.en{ext}"):
            if name in candidates:
                return name
        others = sorted(
            name
            for name in candidates
            if name.endswith(ext) and name[len(stem) + 1 : -len(ext)].replace("-", "").isalnum()
        )
        if others:
            return others[0]
    return None


def find_subtitle(video_path: str | os.PathLike[str]) -> Path | None:
    """A subtitle file beside the video (:func:`pick_subtitle`'s rule over the files named ``stem.*``)."""
    video = Path(video_path)
    stem, folder = video.stem, video.parent
    found = pick_subtitle(stem, (p.name for p in folder.glob(f"{glob_escape(stem)}.*") if p.is_file()))
    return folder / found if found is not None else None


def glob_escape(text: str) -> str:
    """Escape glob metacharacters in a file name."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def read_subtitle(path: str | os.PathLike[str]) -> Captions:
    """A .vtt or .srt file by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".vtt":
        return read_vtt(path)
    if suffix == ".srt":
        return read_srt(path)
    raise ExtractError(f"{path}: unknown subtitle format {suffix!r} (expected .vtt or .srt)")
