"""Caption readers on tricky files: rolling VTT duplicates, tags, BOM, CRLF, missing ends, bad bytes, empty."""

from __future__ import annotations

import json

import pytest

from pipeline.extract.captions import (
    CueError,
    find_subtitle,
    parse_cues,
    read_captions_csv,
    read_howto100m_json,
    read_srt,
    read_vtt,
)
from pipeline.extract.errors import ExtractError

YOUTUBE_VTT = "\n".join(
    [
        "WEBVTT",
        "Kind: captions",
        "Language: en",
        "",
        "00:00:00.160 --> 00:00:02.990 align:start position:0%",
        " ",
        "so<00:00:00.320><c> today</c><00:00:00.640><c> we're</c><00:00:00.960><c> making</c>",
        "",
        "00:00:02.990 --> 00:00:03.000 align:start position:0%",
        "so today we're making",
        " ",
        "",
        "00:00:03.000 --> 00:00:05.500 align:start position:0%",
        "so today we're making",
        "a<00:00:03.200><c> chocolate</c><00:00:03.600><c> cake</c>",
        "",
        "00:00:05.500 --> 00:00:05.510 align:start position:0%",
        "a chocolate cake",
        " ",
        "",
        "00:00:05.510 --> 00:00:08.000 align:start position:0%",
        "a chocolate cake",
        "first<00:00:06.000><c> whisk</c> the &amp; eggs",
        "",
    ]
)


def test_vtt_rolling_duplicates_and_inline_tags_are_merged(tmp_path):
    path = tmp_path / "v.en.vtt"
    path.write_bytes(b"\xef\xbb\xbf" + YOUTUBE_VTT.replace("\n", "\r\n").encode("utf-8"))  # BOM + CRLF
    caps = read_vtt(path)
    assert caps.text == ["so today we're making", "a chocolate cake", "first whisk the & eggs"]
    assert caps.start == [0.16, 3.0, 5.51]
    assert caps.end == [2.99, 5.5, 8.0]


def test_vtt_plain_with_cue_ids_notes_and_short_timestamps(tmp_path):
    path = tmp_path / "p.vtt"
    path.write_text(
        "WEBVTT\n\nNOTE a comment\n\n1\n00:01.000 --> 00:02.500\n<v Anna>Hello <i>there</i></v>\n\n"
        "2\n01:00:02.500 --> 01:00:04.000\nsecond line\ncontinued\n",
        encoding="utf-8",
    )
    caps = read_vtt(path)
    assert caps.text == ["Hello there", "second line continued"]
    assert caps.start == [1.0, 3602.5]
    assert caps.end == [2.5, 3604.0]


def test_srt_with_crlf_and_style_codes(tmp_path):
    path = tmp_path / "s.srt"
    path.write_bytes(
        "1\r\n00:00:01,000 --> 00:00:02,000\r\n{\\an8}<b>Put</b> the pan\r\n\r\n"
        "2\r\n00:00:02,500 --> 00:00:04,250\r\non the stove — 火\r\n".encode()
    )
    caps = read_srt(path)
    assert caps.text == ["Put the pan", "on the stove — 火"]
    assert caps.start == [1.0, 2.5] and caps.end == [2.0, 4.25]


def test_non_utf8_bytes_fail_naming_the_file(tmp_path):
    path = tmp_path / "latin.srt"
    path.write_bytes("1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ExtractError, match=r"latin\.srt.*not valid UTF-8.*offset"):
        read_srt(path)


def test_empty_files_hold_no_captions(tmp_path):
    for name in ("e.vtt", "e.srt", "e.json", "e.csv"):
        (tmp_path / name).write_bytes(b"")
    assert len(read_vtt(tmp_path / "e.vtt")) == 0
    assert len(read_srt(tmp_path / "e.srt")) == 0
    assert read_howto100m_json(tmp_path / "e.json") == {}
    assert read_captions_csv(tmp_path / "e.csv") == {}


def test_howto100m_json_missing_ends_and_nan_text(tmp_path):
    path = tmp_path / "caption.json"
    data = {
        "vidA": {"start": [0.0, 2.0, 5.0], "end": [1.5, None, None], "text": ["a", "b", "c"]},
        "vidB": {"start": [1.0], "text": [float("nan")]},
    }
    path.write_text(json.dumps(data), encoding="utf-8")  # NaN is written as the bare token, as in HowTo100M
    out = read_howto100m_json(path)
    assert out["vidA"].end == [1.5, 5.0, 5.0]  # missing end = next start; the last becomes a point caption
    assert out["vidB"].text == [""] and out["vidB"].end == [1.0]


def test_csv_groups_sorts_and_fills_ends(tmp_path):
    path = tmp_path / "clips.csv"
    path.write_text(
        '\ufeffvideo_id,start,end,text\r\nv1,5,,later\r\nv1,1,3,"first, with comma"\r\nv2,0,2,other\r\n',
        encoding="utf-8",
    )
    out = read_captions_csv(path)
    assert out["v1"].text == ["first, with comma", "later"]
    assert out["v1"].end == [3.0, 5.0]
    assert out["v2"].start == [0.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,t\n1,2\n", encoding="utf-8")
    with pytest.raises(ExtractError, match=r"bad\.csv.*video_id,start,end,text"):
        read_captions_csv(bad)


def test_find_subtitle_prefers_plain_then_english(tmp_path):
    video = tmp_path / "my video.mp4"
    video.write_bytes(b"x")
    assert find_subtitle(video) is None
    (tmp_path / "my video.de.vtt").write_text("WEBVTT\n", encoding="utf-8")
    assert find_subtitle(video).name == "my video.de.vtt"
    (tmp_path / "my video.en.vtt").write_text("WEBVTT\n", encoding="utf-8")
    assert find_subtitle(video).name == "my video.en.vtt"
    (tmp_path / "my video.vtt").write_text("WEBVTT\n", encoding="utf-8")
    assert find_subtitle(video).name == "my video.vtt"


def test_parse_cues_keeps_line_numbers_identifiers_and_stray_lines():
    """The one cue grammar (subtitles and Mining YouTube): numbers of the timing lines, SRT ids, stray blocks."""
    text = "1\n00:00:01,500 --> 00:00:01,500\nadd_sugar \n\nnot a cue\n\n2\n00:00:02,000 --> 00:00:03,250\na\nb\n"
    parsed = parse_cues(text, where="x.srt")
    assert [(c.line, c.ident, c.start, c.end, c.lines) for c in parsed.cues] == [
        (2, "1", 1.5, 1.5, ("add_sugar ",)),  # a zero-length cue parses; judging it is the caller's rule
        (8, "2", 2.0, 3.25, ("a", "b")),
    ]
    assert parsed.stray == ((5, "not a cue"),)
    # WebVTT's header and NOTE blocks are stray lines, not cues
    assert parse_cues("WEBVTT\n\nNOTE hi\n\n00:01.000 --> 00:02.000\nx\n", where="v").stray == (
        (1, "WEBVTT"),
        (3, "NOTE hi"),
    )
    with pytest.raises(CueError, match=r"^x\.srt:2: bad timestamp") as err:
        parse_cues("1\n00:00:xx,000 --> 00:00:02,000\nlabel\n", where="x.srt")
    assert err.value.line == 2 and isinstance(err.value, ExtractError)
