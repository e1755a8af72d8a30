"""Mining YouTube (Kuehne et al. 2019): ordered action segmentation of 250 cooking videos, from the release's files.

``SRT_DIR/<video_id>.srt`` (``test/annotations.tar.gz`` of hildekuehne/Mining_YouTube_dataset) lists a video's
actions in order: numbered entries with a ``HH:MM:SS,mmm --> HH:MM:SS,mmm`` line and one line naming a
``verb_object`` class; time not covered by an entry is background. The alignment places the transcript (the
classes in their order) on the video; the text given to the model is the class name with spaces.

What the release holds and how each quirk is read (:data:`RULES`, also written to ``metrics.json``):

- Files are UTF-8 with a byte-order mark (all but two), LF or CRLF (83 of 250), ending in one or two newlines;
  they are read with the project's one cue grammar (:func:`pipeline.extract.captions.parse_cues`).
- Three entries are zero-length (``4LtF8vuXd0o.srt:46`` ``00:01:46,510 --> 00:01:46,510``): they cover no time
  at the annotation's millisecond resolution and are dropped, each with a warning naming ``file:line``.
- Labels carry trailing spaces (31 entries) and are not all dictionary names: 260 of 690 distinct labels
  (``crack_eggs``, ``pour_egg_whites``, ``using_spatula``) are not among the 512 classes the paper evaluates.
  They are mapped to the dictionary ``mapping_without_meta.txt`` (given, or found beside the annotations) as
  the official frame-level ground truth writes them (``crack_eggs`` -> ``crack_egg``); the few that map to
  nothing (``press_it``, ``add_filling``) are background, counted per label and reported.
- Spans stay at millisecond resolution; entries that overlap their predecessor by a few ms keep their times.
- Frame-level ground truth (``groundTruth/<video_id>.txt``, one class per frame, from the release's download
  archive) and transcripts (``transcripts/<video_id>.txt``) are used when the user has them.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.evaluate.dataset import (
    AnnotationError,
    EvalDataset,
    ReadLog,
    StepVideo,
    index_videos,
    split_present,
)
from pipeline.extract.captions import parse_cues, read_text
from pipeline.extract.errors import ExtractError

DICTIONARY_FILE = "mapping_without_meta.txt"
BACKGROUND = "background"
GROUND_TRUTH_DIRS = ("groundTruth", "groundtruth", "GroundTruth")
TRANSCRIPT_DIRS = ("transcripts", "transcript")
# Spelling variants of verbs and objects in the SRT labels, with the dictionary's spelling.
VERB_SYNONYMS = {"using": "use", "tilting": "tilt", "stiring": "stir", "scrambled": "scramble", "appy": "apply"}
OBJECT_SYNONYMS = {"them": "it", "omellete": "omelette", "omelet": "omelette"}

RULES = {
    "files": "UTF-8 with or without a byte-order mark, LF or CRLF line ends (pipeline.extract.captions.parse_cues)",
    "zero_length": "an entry with end == start covers no time at the annotation's millisecond resolution: "
    "dropped from the transcript and the ground truth, with a warning naming file:line",
    "reversed": "an entry with end < start is dropped, with a warning naming file:line",
    "overlap": "an entry that starts before the previous one ends keeps its own times (a warning names it)",
    "time": "ground truth at the SRT's millisecond resolution (no rounding to whole seconds)",
    "labels": "trailing spaces stripped, accents folded; then the dictionary name itself, else verb + first object "
    "token with one trailing 's' dropped (crack_eggs -> crack_egg, add_sauce_soy -> add_sauce), else verb and "
    "object spelling variants and -es/-ies plurals (using_spatula -> use_spatula, add_tomatoes -> add_tomato), "
    "else a later token as the object; a label that maps to none of the classes is background (its entry "
    "leaves the transcript and its time is unlabelled), counted per label",
    "frame_truth": "groundTruth/<video_id>.txt (one class per video frame, 'background' included) replaces the "
    "SRT spans when present; frame f covers [f, f+1) / fps with fps = frames / the video's duration; "
    "transcripts/<video_id>.txt (one class per line, or one line of classes) gives the order when present",
}


@dataclass(frozen=True)
class SrtEntry:
    """One SRT entry: the raw label, its span in seconds, and the file lines of its timing and label lines."""

    label: str
    start: float
    end: float
    line: int  # the ``start --> end`` line
    label_line: int


def read_dictionary(path: str | Path) -> tuple[str, ...]:
    """Class names by id from ``mapping_without_meta.txt`` (``<id> <name>`` lines, ids 0..512, ``512 background``)
    or a plain one-name-per-line list such as ``weakYouTube_dict.txt`` (ids = line order, trailing spaces)."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in read_text(path).split("\n") if ln.strip()]
    except ExtractError as exc:
        raise AnnotationError(path, str(exc).split(": ", 1)[-1]) from None
    if not lines:
        raise AnnotationError(path, "empty class dictionary")
    pairs = [ln.split(None, 1) for ln in lines]
    if all(len(p) == 2 and p[0].isdigit() for p in pairs):
        by_id = {int(i): name.strip() for i, name in pairs}
        if sorted(by_id) != list(range(len(by_id))):
            raise AnnotationError(path, "class ids must be 0..n-1, each once")
        return tuple(by_id[i] for i in range(len(by_id)))
    for number, ln in enumerate(lines, start=1):
        if " " in ln:
            raise AnnotationError(path, f"expected '<id> <name>' or '<name>' lines, got {ln!r}", number)
    return tuple(lines)


def find_beside(srt_dir: Path, names: tuple[str, ...], *, folder: bool = False) -> Path | None:
    """The first of ``names`` in the annotation folder or the two folders above it (the release keeps the
    dictionary at its root and the annotations in ``test/annotations/``)."""
    for base in (srt_dir, *list(srt_dir.resolve().parents)[:2]):
        for name in names:
            candidate = base / name
            if candidate.is_dir() if folder else candidate.is_file():
                return candidate
    return None


def _fold_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _object_forms(token: str) -> list[str]:
    """Spellings of an object token to try, most literal first: ``tomatoes`` -> tomatoes, tomatoe, tomato."""
    token = OBJECT_SYNONYMS.get(token, token)
    forms = [token]
    if token.endswith("s") and not token.endswith("ss"):
        forms.append(token[:-1])
    if token.endswith("es"):
        forms.append(token[:-2])
    if token.endswith("ies"):
        forms += [token[:-3] + "y", token[:-3] + "i"]
    return forms


class LabelMapper:
    """Maps raw SRT labels to dictionary class names by the tiers of :data:`RULES` ("labels"); remembers counts."""

    def __init__(self, names: tuple[str, ...] | None) -> None:
        self.names = set(names) if names is not None else None
        self.tiers: dict[str, str] = {}  # raw label -> exact | plural_or_qualifier | spelling | unknown
        self.mapped: dict[str, str | None] = {}
        self.entries: Counter[str] = Counter()  # raw label -> entries
        self.first_seen: dict[str, str] = {}  # raw label -> file:line of its first entry

    def __call__(self, raw: str, *, at: str | None = None) -> str | None:
        """The class of ``raw``; ``at`` (``file:line``) counts it as an SRT entry there."""
        if at is not None:
            self.entries[raw] += 1
            self.first_seen.setdefault(raw, at)
        if raw not in self.mapped:
            self.mapped[raw], self.tiers[raw] = self._map(raw)
        return self.mapped[raw]

    def _map(self, raw: str) -> tuple[str | None, str]:
        label = raw.strip()
        if self.names is None:  # no dictionary: the raw labels are the classes
            return label, "exact"
        if label in self.names:
            return label, "exact"
        folded = _fold_accents(label)
        if folded in self.names:  # sauté_it
            return folded, "spelling"
        tokens = folded.split("_")
        if len(tokens) >= 2:
            verb, obj = tokens[0], tokens[1]
            for cand in (f"{verb}_{obj}", f"{verb}_{obj[:-1]}" if obj.endswith("s") else None):
                if cand in self.names:
                    return cand, "plural_or_qualifier"
            verb = VERB_SYNONYMS.get(verb, verb)
            for obj_token in tokens[1:]:
                for form in _object_forms(obj_token):
                    if f"{verb}_{form}" in self.names:
                        return f"{verb}_{form}", "spelling"
        return None, "unknown"

    def summary(self) -> dict[str, object]:
        """Distinct labels and entries per tier, and the unknown labels with their entry counts."""
        out: dict[str, object] = {}
        for tier in ("exact", "plural_or_qualifier", "spelling", "unknown"):
            raws = [r for r, t in self.tiers.items() if t == tier and r in self.entries]
            out[tier] = {"labels": len(raws), "entries": sum(self.entries[r] for r in raws)}
        unknown = Counter[str]()
        for r, t in self.tiers.items():
            if t == "unknown" and r in self.entries:
                unknown[r.strip()] += self.entries[r]
        out["unknown_labels"] = dict(sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0])))
        out["classes_used"] = len({self.mapped[r] for r in self.entries if self.mapped[r] is not None})
        return out


def read_srt_entries(path: str | Path, log: ReadLog | None = None) -> list[SrtEntry]:
    """The entries of one annotation SRT, in file order, under :data:`RULES`.

    Unparseable structure (a timing line that is not one, text outside an entry, an entry without a label)
    raises :class:`AnnotationError` naming the file and line; the quirks of the release are warnings.
    """
    path = Path(path)
    log = log if log is not None else ReadLog()
    try:
        parsed = parse_cues(read_text(path), where=str(path))
    except ExtractError as exc:
        line = getattr(exc, "line", None)
        problem = getattr(exc, "problem", None) or str(exc).split(": ", 1)[-1]
        if "timing line" in problem:
            problem = f"expected 'start --> end' after the entry number ({problem})"
        raise AnnotationError(path, problem, line) from None
    if parsed.stray:
        numbers = {n for n, t in parsed.stray if t.strip().isdigit()}
        # an entry number is stray only when its entry is broken: report the line after it
        bad = [(n, t) for n, t in parsed.stray if n not in numbers] or parsed.stray[:1]
        number, text = bad[0]
        if number - 1 in numbers:
            problem = "expected 'start --> end' after the entry number"
        elif number in numbers:
            problem = "entry number without an entry"
        else:
            problem = "text outside an entry"
        raise AnnotationError(path, f"{problem}, got {text.strip()!r}", number)
    out: list[SrtEntry] = []
    previous_end: float | None = None
    for cue in parsed.cues:
        texts = [(cue.line + 1 + i, t.strip()) for i, t in enumerate(cue.lines) if t.strip()]
        if not texts:
            raise AnnotationError(path, "entry has no class name", cue.line + 1)
        label_line, label = texts[0]
        if len(texts) > 1:
            log.warn(path, f"entry has {len(texts)} text lines; the first, {label!r}, is its class", label_line)
        log.counts["entries"] += 1
        if " " in label:
            log.warn(path, f"class name {label!r} has spaces; read as {label.replace(' ', '_')!r}", label_line)
            label = "_".join(label.split())
        if cue.end == cue.start:
            log.counts["entries_zero_length_dropped"] += 1
            log.warn(path, f"zero-length entry {label!r} at {cue.start:.3f} s: dropped (covers no time)", cue.line)
            continue
        if cue.end < cue.start:
            log.counts["entries_reversed_dropped"] += 1
            log.warn(path, f"reversed entry {label!r} ({cue.start:.3f} > {cue.end:.3f} s): dropped", cue.line)
            continue
        if previous_end is not None and cue.start < previous_end:
            log.counts["entries_overlapping_previous"] += 1
            log.warn(path, f"entry starts {1000 * (previous_end - cue.start):.0f} ms before the previous one ends: "
                     "kept as written", cue.line)  # fmt: skip
        previous_end = cue.end if previous_end is None else max(previous_end, cue.end)
        out.append(SrtEntry(label, cue.start, cue.end, cue.line, label_line))
    return out


def read_class_lines(path: str | Path) -> list[str]:
    """Class names of a ground-truth or transcript file: one per line (the final newline ends the last one), or
    one line of space-separated names as the ``.grammar`` sample writes them."""
    path = Path(path)
    try:
        text = read_text(path)
    except ExtractError as exc:
        raise AnnotationError(path, str(exc).split(": ", 1)[-1]) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    if len(lines) == 1 and " " in lines[0].strip():
        return lines[0].split()
    return [ln.strip() for ln in lines]


def class_text(label: str) -> str:
    """The sentence given to the text encoder for a class name: ``crack_egg`` -> ``crack egg``."""
    return label.replace("_", " ")


def load_mining(
    srt_dir: str | Path,
    videos: str | Path,
    *,
    name: str = "mining",
    dictionary: str | Path | None = None,
    ground_truth: str | Path | None = None,
) -> EvalDataset:
    """Step videos of every ``*.srt`` under ``srt_dir`` (sub-folders name the task), labels mapped to the
    dictionary (``dictionary``, else ``mapping_without_meta.txt`` beside the annotations, else the raw labels with
    a warning), frame-level ground truth from ``ground_truth`` (else a ``groundTruth/`` folder beside them)."""
    srt_dir = Path(srt_dir)
    files = sorted(srt_dir.rglob("*.srt")) if srt_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no .srt annotation files under {srt_dir}")
    log = ReadLog(facts={"rules": dict(RULES)})
    sources = _find_sources(srt_dir, dictionary, ground_truth, log)
    read = (_read_step_video(path, srt_dir, sources, log) for path in files)
    step_videos = [sv for sv in read if sv is not None]  # a file without a dictionary class is left out
    _warn_unknown_labels(sources.mapper, log)
    log.facts["labels"] = sources.mapper.summary()
    _compare_video_list(srt_dir, files, log)
    if not step_videos:
        raise AnnotationError(srt_dir, "no annotation file has an entry with a dictionary class")
    present, missing = split_present((sv.video_id for sv in step_videos), index_videos(videos))
    return EvalDataset(
        name=name,
        kind="mining",
        source=str(srt_dir),
        video_dir=str(videos),
        videos=present,
        missing=missing,
        step_videos=step_videos,
        localisation="mining",
        log=log,
    )


@dataclass(frozen=True)
class _Sources:
    """Where a Mining YouTube release's pieces beside the SRT files were found."""

    mapper: LabelMapper  # raw label -> dictionary class (the raw labels themselves without a dictionary)
    ground_truth: Path | None  # groundTruth/ folder: one class per frame, per video
    transcripts: Path | None  # transcripts/ folder beside it: the classes in their order, per video


def _find_sources(
    srt_dir: Path, dictionary: str | Path | None, ground_truth: str | Path | None, log: ReadLog
) -> _Sources:
    """The class dictionary, frame-level ground truth and transcripts: as given, else found beside ``srt_dir``."""
    dict_path = Path(dictionary) if dictionary else find_beside(srt_dir, (DICTIONARY_FILE,))
    if dict_path is not None:
        names = read_dictionary(dict_path)
        log.facts["dictionary"] = {"path": str(dict_path), "classes": len([n for n in names if n != BACKGROUND])}
    else:
        names = None
        log.facts["dictionary"] = None
        log.warn(srt_dir, f"no {DICTIONARY_FILE} given or beside the annotations: the classes are the raw SRT "
                 "labels, not the paper's 512 (pass mining_dictionary=PATH)")  # fmt: skip
    gt_dir = Path(ground_truth) if ground_truth else find_beside(srt_dir, GROUND_TRUTH_DIRS, folder=True)
    tr_dir = find_beside(gt_dir, TRANSCRIPT_DIRS, folder=True) if gt_dir is not None else None
    log.facts["frame_truth"] = str(gt_dir) if gt_dir is not None else None
    return _Sources(LabelMapper(names), gt_dir, tr_dir)


def _read_step_video(path: Path, srt_dir: Path, sources: _Sources, log: ReadLog) -> StepVideo | None:
    """One annotation file as a step video: its entries with a dictionary class, its frame-level ground truth and
    transcript when the release has them. None (with a warning) when no entry names a class."""
    mapper = sources.mapper
    log.counts["files"] += 1
    kept: list[tuple[str, float, float]] = []
    for e in read_srt_entries(path, log):
        cls = mapper(e.label, at=f"{path}:{e.label_line}")
        if cls is None:
            log.counts["entries_unknown_label"] += 1
            continue
        kept.append((cls, e.start, e.end))
    frame_truth = None
    gt_dir, tr_dir = sources.ground_truth, sources.transcripts
    if gt_dir is not None and (gt_dir / f"{path.stem}.txt").is_file():
        frame_truth = tuple(
            (mapper(x) or BACKGROUND) if x and x != BACKGROUND else BACKGROUND
            for x in read_class_lines(gt_dir / f"{path.stem}.txt")
        )
        log.counts["videos_with_frame_truth"] += 1
    order = [c for c, _, _ in kept]
    if tr_dir is not None and (tr_dir / f"{path.stem}.txt").is_file():
        order = [m for m in (mapper(x) for x in read_class_lines(tr_dir / f"{path.stem}.txt") if x) if m]
        order = [c for c in order if c != BACKGROUND]
    if not order:
        log.counts["videos_without_classes"] += 1
        log.warn(path, "no entry with a dictionary class: the video has nothing to align and is left out")
        return None
    task = path.parent.relative_to(srt_dir).as_posix() if path.parent != srt_dir else ""
    return StepVideo(
        video_id=path.stem,
        task=task,
        steps=tuple(class_text(c) for c in order),
        labels=tuple(order),
        segments=tuple(kept),
        frame_truth=frame_truth,
    )


def _warn_unknown_labels(mapper: LabelMapper, log: ReadLog) -> None:
    """One warning per label outside the dictionary, at its first entry."""
    for raw in mapper.entries:
        if mapper.tiers[raw] == "unknown":
            first = mapper.first_seen[raw]
            log.warn(first, f"label {raw.strip()!r} is not a dictionary class ({mapper.entries[raw]} entries, this the "
                     "first): its time is background")  # fmt: skip


def _compare_video_list(srt_dir: Path, files: list[Path], log: ReadLog) -> None:
    """The release's ``videos_test.txt`` (when beside the annotations) against the annotated videos."""
    listed = find_beside(srt_dir, ("videos_test.txt",))
    if listed is None:
        return
    ids = {ln.strip() for ln in read_text(listed).split("\n") if ln.strip()}
    annotated = {p.stem for p in files}
    log.facts["video_list"] = {
        "path": str(listed),
        "annotated_not_listed": sorted(annotated - ids),  # -1okAudsnAc in the release: evaluated all the same
        "listed_not_annotated": sorted(ids - annotated),
    }
