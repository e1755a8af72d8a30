"""Feature extraction (pipeline/extract/README.md): one video and its captions → :class:`storage.sample.VideoFeatures`.

``ExtractConfig`` holds the recipe, ``Extractor`` loads the backbones once and extracts many videos,
``extract_video`` does one; ``captions`` reads subtitle and caption files; ``text.WordVectors`` encodes captions.
The names are imported on first use, so that a module of this package (``ffmpeg``, ``captions``) can be used without
loading torch and torchvision.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ExtractConfig": "pipeline.extract.config",
    "ExtractError": "pipeline.extract.errors",
    "Extractor": "pipeline.extract.extractor",
    "extract_video": "pipeline.extract.extractor",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.extract' has no attribute {name!r}")
