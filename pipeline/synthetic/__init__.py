"""A seeded synthetic narrated-video corpus (pipeline/synthetic/README.md): real mp4 files that behave like
HowTo100M, with CrossTask-style tasks and step annotations.

config.py (concept values, :class:`SynthConfig`) → plan.py (tasks and each video's segments and narration, pure
and seeded) → render.py (pixels, samples, ffmpeg) and text.py (wording, word vectors) → corpus.py (the files).

from pipeline.synthetic import SynthConfig, generate_corpus
info = generate_corpus("corpus/", SynthConfig.tiny())      # info.eval.clips_csv, info.train.video_path(...)
"""

from pipeline.synthetic.config import COLOURS, MOTIONS, SHAPES, SPLITS, Concept, SynthConfig
from pipeline.synthetic.corpus import CorpusInfo, SplitInfo, generate_corpus, load_corpus
from pipeline.synthetic.plan import Task, VideoPlan, canonical_caption, plan_tasks, plan_video, step_name

__all__ = [
    "COLOURS",
    "MOTIONS",
    "SHAPES",
    "SPLITS",
    "Concept",
    "CorpusInfo",
    "SplitInfo",
    "SynthConfig",
    "Task",
    "VideoPlan",
    "canonical_caption",
    "generate_corpus",
    "load_corpus",
    "plan_tasks",
    "plan_video",
    "step_name",
]
