"""pipeline/search/clips.py: sliding windows cover the video; caption clips keep their spans; window text."""

import pytest

from pipeline.search.clips import captions_in, plan_clips, window_starts
from pipeline.search.config import IndexConfig
from storage.sample import Captions


def test_windows_cover_the_video_and_the_last_one_ends_at_the_end():
    assert window_starts(20.0, 8.0, 4.0) == [0.0, 4.0, 8.0, 12.0]
    assert window_starts(21.0, 8.0, 4.0) == [0.0, 4.0, 8.0, 12.0, 13.0]  # 13 + 8 = 21: the tail is covered
    assert window_starts(5.0, 8.0, 4.0) == [0.0]  # shorter than a window: one clip
    assert window_starts(8.0, 8.0, 4.0) == [0.0]


def test_plan_clips_windows_then_captions_clamped():
    caps = Captions(start=[1.0, 9.5, 30.0, 6.0], end=[3.0, 11.0, 31.0, 6.0], text=["one", "two", "outside", "point"])
    clips = plan_clips(12.0, caps, IndexConfig(window=8, stride=4))
    assert [(c.kind, c.start, c.end) for c in clips] == [
        ("window", 0.0, 8.0),
        ("window", 4.0, 12.0),
        ("caption", 1.0, 3.0),
        ("caption", 9.5, 11.0),
        ("caption", 6.0, 6.0),  # a point caption stays a point; "outside" (after the end) is dropped
    ]
    assert clips[0].text == "one / point" and clips[1].text == "point / two"
    assert [c.kind for c in plan_clips(12.0, caps, IndexConfig(captions=False))] == ["window", "window"]
    assert plan_clips(0.0, caps, IndexConfig()) == []


def test_captions_in_keeps_each_text_once_in_time_order():
    caps = Captions(start=[5.0, 0.0, 2.0], end=[6.0, 1.0, 3.0], text=["c", "a", "a"])
    assert captions_in(caps, 0.0, 10.0) == "a / c"
    assert captions_in(caps, 1.5, 4.0) == "a"
    assert captions_in(caps, 7.0, 9.0) == ""


def test_stride_longer_than_window_is_refused():
    with pytest.raises(ValueError, match="gaps"):
        IndexConfig(window=2, stride=3)
