"""What decides a synthetic corpus: the concept values (colour, shape, motion) with the sound tied to each, and
:class:`SynthConfig` (sizes, noise rates, hold-out, encoding)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from model.fingerprint import FingerprintedConfig, runtime_field
from pipeline.synthetic.render import SHAPE_HARMONICS

FORMAT_VERSION = 1
SPLITS = ("train", "eval")
# colour -> (hue in degrees, pitch in Hz). Hues at least 55 degrees apart; pitches about 1.6x apart.
COLOURS: dict[str, tuple[float, float]] = {
    "red": (0.0, 300.0),
    "yellow": (55.0, 480.0),
    "green": (120.0, 770.0),
    "blue": (225.0, 1230.0),
    "purple": (285.0, 1970.0),
}
SHAPES: tuple[str, ...] = tuple(SHAPE_HARMONICS)
# motion -> beeps per second of the segment's tone (0 = a steady tone).
MOTIONS: dict[str, float] = {"left": 2.0, "right": 3.0, "up": 4.0, "down": 6.0, "spin": 0.0}

Concept = tuple[str, str, str]  # (colour, shape, motion)


class SynthConfig(FingerprintedConfig):
    """Everything that decides the corpus. Same config (same fingerprint) -> the same decoded videos."""

    seed: int = 0
    n_train: int = Field(48, ge=1)
    n_eval: int = Field(16, ge=1)
    segments_per_video: int = Field(4, ge=1)  # = steps per task; a video may add one extra segment
    segment_seconds: float = Field(3.0, gt=0.5)
    width: int = Field(128, ge=16)  # even: H.264 yuv420p needs even sizes
    height: int = Field(96, ge=16)
    fps: int = Field(12, ge=1)
    sample_rate: int = Field(16000, ge=8000)
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    motions: tuple[str, ...] = tuple(MOTIONS)
    n_tasks: int = Field(8, ge=1)  # tasks whose videos appear in both splits
    extra_segment_prob: float = Field(0.25, ge=0, le=1)  # chance that a video inserts one non-step segment
    size_range: tuple[float, float] = (0.4, 0.6)  # shape extent as a fraction of the frame height
    captions_per_segment: tuple[int, int] = (1, 2)  # inclusive range
    shift_prob: float = Field(0.15, ge=0, le=1)  # chance that a caption is shifted in time
    shift_seconds: tuple[float, float] = (1.0, 3.0)  # size of a shift (random sign)
    filler_prob: float = Field(0.2, ge=0, le=1)  # per segment: chance of one unrelated caption
    capitalise_prob: float = Field(0.1, ge=0, le=1)
    holdout_combinations: bool = False  # hold concept combinations out of train (zero-shot composition)
    holdout_level: Literal["colour_shape", "colour_shape_motion"] = "colour_shape"
    n_holdout: int = Field(2, ge=1)
    synonym_noise: float = Field(0.5, ge=0)  # word vector = unit(concept + noise * own); see synthetic/text.py
    crf: int = Field(20, ge=0, le=51)  # x264 quality
    workers: int = runtime_field(1, ge=1)  # videos encoded in parallel (threads driving ffmpeg processes)

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        for kind, chosen, known in (
            ("colours", self.colours, COLOURS),
            ("shapes", self.shapes, SHAPES),
            ("motions", self.motions, MOTIONS),
        ):
            unknown = [v for v in chosen if v not in known]
            if unknown or not chosen or len(set(chosen)) != len(chosen):
                raise ValueError(f"{kind} must be distinct values among {list(known)}, got {list(chosen)}")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even (H.264 yuv420p), got {self.width}x{self.height}")
        lo, hi = self.size_range
        if not 0.1 <= lo <= hi <= 0.8:
            raise ValueError(f"size_range must satisfy 0.1 <= lo <= hi <= 0.8, got {self.size_range}")
        if not 1 <= self.captions_per_segment[0] <= self.captions_per_segment[1]:
            raise ValueError(f"captions_per_segment must be 1 <= lo <= hi, got {self.captions_per_segment}")
        if not 0 <= self.shift_seconds[0] <= self.shift_seconds[1]:
            raise ValueError(f"shift_seconds must be 0 <= lo <= hi, got {self.shift_seconds}")
        n_concepts = len(self.colours) * len(self.shapes) * len(self.motions)
        if self.segments_per_video > n_concepts - 1:
            raise ValueError(f"segments_per_video={self.segments_per_video} needs more than {n_concepts} concepts")
        return self

    @classmethod
    def tiny(cls, **overrides: Any) -> SynthConfig:
        """For the test suite: 16 train + 8 eval videos of 3 x 3 s, 3 colours x 3 shapes x 3 motions, 4 tasks."""
        base: dict[str, Any] = dict(
            n_train=16,
            n_eval=8,
            segments_per_video=3,
            colours=("red", "green", "blue"),
            shapes=("circle", "square", "triangle"),
            motions=("left", "right", "spin"),
            n_tasks=4,
            extra_segment_prob=0.0,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def demo(cls, **overrides: Any) -> SynthConfig:
        """For ``make demo``: 48 train + 16 eval videos of 3 x 3 s (some with an extra segment), all concepts.

        Three segments, not four: extraction is the demo's cost, and on a 2-core CPU without native bf16 (fp32
        networks, ~0.4 s per second of video) four segments took the demo past 10 minutes. The recipe is the same.
        """
        return cls(**{"segments_per_video": 3, **overrides})
