"""The embedding stage (pipeline/evaluate/README.md, pipeline/search/README.md): a clip span → model inputs → embeddings, once, for training's
validation, evaluation and search (which never import one another).

- ``pooling``: a span of one video's features → model inputs (the recipe training pools clips with);
- ``request``: what to embed (:class:`ClipRef` spans, query texts, per-second videos) as an :class:`EmbedRequest`;
- ``text``: sentences → word2vec sentence vectors (:class:`SentenceEncoder`, :func:`sentence_encoder`);
- ``stage``: :func:`embed_request` → :class:`Embeddings` through a network.

from pipeline.embed import EmbedRequest, ClipRef, embed_request
emb = embed_request(EmbedRequest.of([ClipRef("vid", 0, 8)]), videos, net, audio_frames=1024, with_audio=True)

Names are imported on first use: the request types and the pooling recipe alone load no torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    **dict.fromkeys(("ClipRef", "EmbedRequest", "StepTexts"), "pipeline.embed.request"),
    **dict.fromkeys(("SentenceEncoder", "sentence_encoder"), "pipeline.embed.text"),
    **dict.fromkeys(
        ("Embeddings", "ProgressFn", "SentenceFn", "StepVideoInputs", "embed_request"), "pipeline.embed.stage"
    ),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.embed' has no attribute {name!r}")
