"""Clip sampling: hand-made caption timings; clip arrays equal the pooling recipe (tests/pipeline/test_pooling.py),
and the loader's in-place writer equals them bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from train_data_helpers import concept_tables, make_video

from pipeline.embed.pooling import crop_audio, pool_text, pool_video
from pipeline.train.clips import Clip, ClipBuffers, clips_to_arrays, grow_span, sample_clips, write_clips
from storage.sample import Captions, VideoFeatures


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


def _check_written(feats: VideoFeatures, clips: list[Clip], frames: int) -> None:
    """write_clips into rows 3.. of a buffer pre-filled with garbage equals clips_to_arrays exactly."""
    expect = clips_to_arrays(feats, clips, frames)
    buf = ClipBuffers.allocate(len(clips) + 5, frames)
    for t in buf.tensors().values():
        t.fill_(True if t.dtype == torch.bool else 7)  # every element of the written rows must be overwritten
    write_clips(feats, clips, buf, 3)
    rows = slice(3, 3 + len(clips))
    np.testing.assert_array_equal(buf.video[rows].numpy(), expect.video)
    np.testing.assert_array_equal(buf.text[rows].numpy(), expect.text)
    np.testing.assert_array_equal(buf.audio[rows].numpy(), expect.audio.astype(np.float16))
    np.testing.assert_array_equal(buf.audio_lengths[rows].numpy(), expect.audio_lengths)
    np.testing.assert_array_equal(buf.has_audio[rows].numpy(), expect.has_audio)
    assert (buf.video[:3] == 7).all() and (buf.video[3 + len(clips) :] == 7).all()  # other rows untouched


@pytest.mark.parametrize("frames", [64, 256, 2000])  # cropped, and zero-padded past the clip and past the video
def test_write_clips_equals_the_reference_bit_for_bit(frames):
    feats = _video()
    _check_written(feats, sample_clips(feats.captions, 7, 3.0, np.random.default_rng(1)), frames)
    _check_written(_video(audio=False), sample_clips(feats.captions, 3, 0.0, np.random.default_rng(2)), frames)


def test_write_clips_edge_spans_equal_the_reference():
    feats = _video()  # 10 s: 10 rows of 2D, 15 of 3D, 1000 mel columns
    # empty and out-of-range spans (features shorter than the captions say) give zeros, as the recipe does
    feats.rgb3d = feats.rgb3d[:4]
    feats.mel = feats.mel[:, :350]
    clips = [Clip(0, 0, 0.0, 2.0), Clip(3, 4, 6.0, 10.0), Clip(4, 4, 9.99, 10.0), Clip(2, 2, 4.0, 4.0)]
    _check_written(feats, clips, 300)


def test_shared_buffers_live_in_shared_memory():
    buf = ClipBuffers.allocate(4, 32, shared=True)
    assert all(t.is_shared() for t in buf.tensors().values())
    assert buf.audio.shape == (4, 40, 32) and buf.audio.dtype == torch.float16
