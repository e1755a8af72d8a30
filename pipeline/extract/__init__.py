"""Feature extraction (DESIGN sections 3 and 4): one video and its captions → :class:`pipeline.features.VideoFeatures`.

``ExtractConfig`` holds the recipe, ``Extractor`` loads the backbones once and extracts many videos,
``extract_video`` does one; ``captions`` reads subtitle and caption files; ``text.WordVectors`` encodes captions.
"""

from pipeline.extract.config import ExtractConfig
from pipeline.extract.errors import ExtractError
from pipeline.extract.extractor import Extractor, extract_video

__all__ = ["ExtractConfig", "ExtractError", "Extractor", "extract_video"]
