"""Words of the synthetic corpus: concept synonyms, caption and query wording, and the word-vector file.

Word vectors (why they look like this): vectors trained on so small a corpus would make every colour word
alike, since all colour words share every context. So each word gets a seeded random 300-d vector, except the
words that name a concept value: every synonym of one value (``ball``, ``circle``, ``disc``) is
``normalise(value_vector + synonym_noise * own_vector)``, so synonyms are close (cosine about
``1 / (1 + synonym_noise**2)``, 0.8 at the default 0.5) and words of different values are unrelated (cosine
about 0 +- 0.06). A capitalised spelling gets the vector of its lower-cased form. Vectors are unit-norm and
depend only on the seed and the word (not on the vocabulary's order), so adding a word changes no other vector.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

DIM = 300

# Concept values -> words that name them (first = canonical). Single tokens, lower case, no punctuation, so
# that any tokenizer (whitespace, regex) sees the same words.
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "lime"),
    "blue": ("blue", "azure", "navy"),
    "purple": ("purple", "violet", "lilac"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block", "tile"),
    "triangle": ("triangle", "wedge", "pyramid"),
    "cross": ("cross", "plus", "crosshair"),
}
# Motion phrases: each names the motion with one of MOTION_WORDS (checked by the tests).
MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("moves to the left", "goes left", "slides leftwards", "drifts leftward", "travels west"),
    "right": ("moves to the right", "goes right", "slides rightwards", "drifts rightward", "travels east"),
    "up": ("moves up", "rises", "goes upward", "climbs upwards", "floats up"),
    "down": ("moves down", "falls", "goes downward", "sinks downwards", "drops down"),
    "spin": ("spins in place", "is spinning", "rotates", "keeps rotating", "twirls around"),
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left", "leftwards", "leftward", "west"),
    "right": ("right", "rightwards", "rightward", "east"),
    "up": ("up", "rises", "upward", "upwards"),
    "down": ("down", "falls", "downward", "downwards"),
    "spin": ("spin", "spins", "spinning", "rotates", "rotating", "twirls"),
}
CANONICAL_MOTION_PHRASE = {m: phrases[0] for m, phrases in MOTION_PHRASES.items()}

# Narration templates, HowTo100M-like (lower case, no punctuation). {c} colour word, {s} shape word, {m} phrase.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "now a {c} {s} {m}",
    "here we see the {c} {s} {m}",
    "the {c} {s} {m}",
    "next the {c} {s} {m}",
    "watch how the {c} {s} {m}",
    "and then a {c} {s} that {m}",
    "so this {c} {s} {m}",
    "okay so the {c} {s} {m} here",
    "you can see a {c} {s} {m}",
    "look at this {c} {s} it {m}",
)
# Retrieval queries: a different set of wordings than the narration.
QUERY_TEMPLATES: tuple[str, ...] = (
    "a {c} {s} {m}",
    "the {c} {s} that {m}",
    "{c} {s} {m}",
    "video of a {c} {s} that {m}",
)
# Unrelated narration, as in real ASR captions.
FILLERS: tuple[str, ...] = (
    "do not forget to subscribe",
    "thanks for watching",
    "let me know in the comments",
    "hi everyone welcome back to my channel",
    "okay so um yeah",
    "hit the like button",
    "see you next time",
    "i got this one at the store last week",
    "this is sponsored by our friends",
    "alright let us get started",
)
TASK_TITLE_TEMPLATE = "synthetic task {n}"


def tokens(text: str) -> list[str]:
    """Whitespace/punctuation tokens of a caption (the corpus has no punctuation, so both agree)."""
    return re.findall(r"[A-Za-z0-9]+", text)


def concept_groups() -> dict[str, tuple[str, ...]]:
    """Group key (``colour:red``) -> the words that share that value's vector component."""
    groups: dict[str, tuple[str, ...]] = {}
    for kind, table in (("colour", COLOUR_WORDS), ("shape", SHAPE_WORDS), ("motion", MOTION_WORDS)):
        for value, words in table.items():
            groups[f"{kind}:{value}"] = words
    return groups


def all_template_words() -> set[str]:
    """Every word any caption, query, filler, step name or task title of any corpus can contain."""
    words: set[str] = set()
    for table in (COLOUR_WORDS, SHAPE_WORDS, MOTION_WORDS):
        for group in table.values():
            words.update(group)
    for phrases in MOTION_PHRASES.values():
        for phrase in phrases:
            words.update(tokens(phrase))
    for text in (*CAPTION_TEMPLATES, *QUERY_TEMPLATES, *FILLERS, TASK_TITLE_TEMPLATE):
        words.update(tokens(re.sub(r"\{\w\}", " ", text)))
    return words


def _stable_rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng([int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def word_vectors(words: list[str], *, seed: int, synonym_noise: float) -> np.ndarray:
    """float32 [len(words), 300] unit vectors, as described in the module docstring."""
    group_of = {w: key for key, group in concept_groups().items() for w in group}
    out = np.empty((len(words), DIM), dtype=np.float32)
    for i, word in enumerate(words):
        lower = word.lower()
        own = _stable_rng(seed, f"word:{lower}").standard_normal(DIM) / np.sqrt(DIM)  # norm about 1
        if lower in group_of:
            shared = _unit(_stable_rng(seed, f"concept:{group_of[lower]}").standard_normal(DIM))
            out[i] = _unit(shared + synonym_noise * own)
        else:
            out[i] = _unit(own)
    return out


def write_word2vec(path: Path, words: list[str], vectors: np.ndarray) -> None:
    """Write GoogleNews-format binary word2vec (gensim ``save_word2vec_format(binary=True)``)."""
    from gensim.models import KeyedVectors  # noqa: PLC0415  deferred: gensim

    kv = KeyedVectors(vector_size=vectors.shape[1], dtype=np.float32)
    kv.add_vectors(words, vectors)
    for i in range(len(words)):
        kv.set_vecattr(i, "count", len(words) - i)  # the format orders by frequency; we have none, keep the order
    kv.save_word2vec_format(str(path), binary=True)


def fill(template: str, colour_word: str, shape_word: str, motion_phrase: str) -> str:
    """A template with its slots filled; "a" before a vowel becomes "an" ("an azure ball")."""
    sentence = template.format(c=colour_word, s=shape_word, m=motion_phrase)
    return re.sub(r"\ba (?=[aeiou])", "an ", sentence)
