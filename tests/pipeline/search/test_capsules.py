"""pipeline/search/capsules.py: capsules by selectivity, their top clips, at most per_video from one video."""

import numpy as np

from pipeline.search.capsules import top_clips_per_capsule


def test_hand_computed_case():
    acts = np.array(
        [
            [0.9, 0.5],  # clip 0, video a
            [0.8, 0.5],  # clip 1, video a (overlapping window of the same video)
            [0.1, 0.5],  # clip 2, video b
            [0.2, 0.6],  # clip 3, video c
        ],
        dtype=np.float32,
    )
    caps = top_clips_per_capsule(acts, ["a", "a", "b", "c"], top=2, per_video=1)
    assert [c.capsule for c in caps] == [0, 1]  # capsule 0 spreads more
    assert caps[0].clips == (0, 3)  # clip 1 is video a again: skipped
    assert caps[1].clips == (3, 0)  # ties (0.5) keep the lower clip id first
    assert caps[0].activations == (np.float32(0.9).item(), np.float32(0.2).item())
    two = top_clips_per_capsule(acts, ["a", "a", "b", "c"], top=3, per_video=2)
    assert two[0].clips == (0, 1, 3)


def test_one_video_holding_every_candidate_still_yields_other_videos():
    rng = np.random.default_rng(0)
    acts = rng.random((500, 3)).astype(np.float32)
    acts[:400, 0] += 10.0  # the 400 strongest clips of capsule 0 are all from video "big"
    vids = ["big"] * 400 + [f"v{i}" for i in range(100)]
    caps = {c.capsule: c for c in top_clips_per_capsule(acts, vids, top=5, per_video=1)}
    assert len(caps[0].clips) == 5 and caps[0].clips[0] < 400
    assert len({vids[i] for i in caps[0].clips}) == 5
