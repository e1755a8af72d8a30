"""Clip sampling and pooling: hand-made caption timings, and pooled vectors against direct numpy on the arrays."""

from __future__ import annotations

import numpy as np
import pytest
from train_data_helpers import concept_tables, make_video

from pipeline.features import Captions, VideoFeatures
from pipeline.train.clips import (
    Clip,
    clips_to_arrays,
    crop_audio,
    grow_span,
    pool_text,
    pool_video,
    sample_clips,
)


def _caps(spans: list[tuple[float, float]]) -> Captions:
    return Captions(start=[s for s, _ in spans], end=[e for _, e in spans], text=[f"c{i}" for i in range(len(spans))])


# Captions: 0:[0,1] 1:[1,2] 2:[2.5,3] 3:[3,7] 4:[7.2,7.5] 5:[20,21]
CAPS = _caps([(0, 1), (1, 2), (2.5, 3), (3, 7), (7.2, 7.5), (20, 21)])


@pytest.mark.parametrize(
    ("index", "min_time", "expected"),
    [
        (3, 4.0, (3, 3)),  # already 4 s long: stays alone (>= min_time stops growth)
        # prev gives [2.5,7]=4.5, next gives [3,7.5]=4.5: a tie takes the previous; 4.5 < 5, so again:
        # prev [1,7]=6 vs next [2.5,7.5]=5 → next (shorter); [2.5,7.5]=5 ≥ 5 stops
        (3, 5.0, (2, 4)),
        (0, 1.5, (0, 1)),  # no previous caption: grows forwards, [0,2]=2
        (5, 3.0, (4, 5)),  # no next caption: grows backwards, [7.2,21]=13.8
        (1, 100.0, (0, 5)),  # never long enough: stops when the clip holds every caption
        (2, 0.0, (2, 2)),
    ],
)
def test_grow_span_follows_the_rule(index, min_time, expected):
    clip = grow_span(CAPS, index, min_time)
    assert (clip.first, clip.last) == expected
    assert clip.start == CAPS.start[clip.first] and clip.end == CAPS.end[clip.last]


def test_grow_span_reaches_min_time_unless_video_too_short():
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.uniform(0.1, 3.0, size=30))
    caps = _caps([(float(s), float(s + d)) for s, d in zip(starts, rng.uniform(0.0, 2.0, size=30), strict=True)])
    for i in range(len(caps)):
        clip = grow_span(caps, i, 5.0)
        assert clip.first <= i <= clip.last
        whole = caps.end[-1] - caps.start[0]
        assert clip.duration >= 5.0 or ((clip.first, clip.last) == (0, len(caps) - 1) and whole < 5.0)
        # minimal: dropping the caption added last (either end) would leave it short of min_time
        if clip.last > clip.first:
            shorter = min(
                caps.end[clip.last - 1] - caps.start[clip.first], caps.end[clip.last] - caps.start[clip.first + 1]
            )
            assert shorter < 5.0


def test_sample_clips_deterministic_and_empty_without_captions():
    a = sample_clips(CAPS, 16, 3.0, np.random.default_rng(7))
    b = sample_clips(CAPS, 16, 3.0, np.random.default_rng(7))
    assert a == b and len(a) == 16
    assert all(isinstance(c, Clip) for c in a)
    assert sample_clips(Captions(), 16, 3.0, np.random.default_rng(7)) == []


def _video(audio: bool = True) -> VideoFeatures:
    return make_video("v", [0, 1, 2, 3, 1], concept_tables(4), np.random.default_rng(3), seg=2.0, audio=audio)


@pytest.mark.parametrize(("start", "end"), [(0.0, 2.0), (2.0, 6.0), (3.3, 4.1), (7.9, 10.0), (9.5, 30.0)])
def test_pool_video_equals_direct_numpy(start, end):
    feats = _video()
    got = pool_video(feats, start, end)
    # Direct: rows whose interval [i/r, (i+1)/r) meets [start, end] are i = floor(start*r) .. floor(end*r).
    parts = []
    for rows, rate in ((feats.rgb2d, 1.0), (feats.rgb3d, 1.5)):
        idx = [i for i in range(rows.shape[0]) if i / rate <= end and (i + 1) / rate > start]
        m = rows[idx].astype(np.float64).max(axis=0)
        parts.append(m / np.linalg.norm(m))
    np.testing.assert_allclose(got, np.concatenate(parts), rtol=1e-6, atol=1e-7)
    assert got.shape == (4096,) and got.dtype == np.float32


def test_pool_text_and_audio_equal_direct_numpy():
    feats = _video()
    rows = feats.w2v[1:4]
    np.testing.assert_array_equal(pool_text(rows), np.maximum(np.maximum(rows[0], rows[1]), rows[2]).astype(np.float32))
    # crop: [2.0, 4.5] → columns 200..449 (250 frames) into 300 frames: zero padded
    mel, n = crop_audio(feats, 2.0, 4.5, 300)
    assert n == 250 and mel.shape == (40, 300)
    np.testing.assert_array_equal(mel[:, :250], feats.mel[:, 200:450].astype(np.float32))
    assert not mel[:, 250:].any()
    # crop longer than frames: the first `frames` columns of the span
    mel, n = crop_audio(feats, 1.0, 9.0, 300)
    assert n == 300
    np.testing.assert_array_equal(mel, feats.mel[:, 100:400].astype(np.float32))
    # no audio: zeros, length 0
    mel, n = crop_audio(_video(audio=False), 1.0, 9.0, 300)
    assert n == 0 and not mel.any()


def test_clips_to_arrays_matches_pooling_functions():
    feats = _video()
    clips = sample_clips(feats.captions, 5, 3.0, np.random.default_rng(0))
    arrays = clips_to_arrays(feats, clips, 256)
    for i, c in enumerate(clips):
        np.testing.assert_array_equal(arrays.video[i], pool_video(feats, c.start, c.end))
        np.testing.assert_array_equal(arrays.text[i], pool_text(feats.w2v[c.first : c.last + 1]))
        mel, n = crop_audio(feats, c.start, c.end, 256)
        np.testing.assert_array_equal(arrays.audio[i], mel)
        assert arrays.audio_lengths[i] == n and arrays.has_audio[i]
    silent = clips_to_arrays(_video(audio=False), clips, 256)
    assert not silent.has_audio.any() and not silent.audio_lengths.any()
