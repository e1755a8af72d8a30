"""S3D-G as released with MIL-NCE on HowTo100M, in that release's state-dict layout (``s3d_howto100m.pth`` loads
strictly), written for mmcaps.

What the release (antoine77340/S3D_HowTo100M, README and ``s3dg.py``) states, and what this module does:

- input ``[B, 3, T, H, W]`` with values in [0, 1] (no mean/std); trained on T = 32 frames (16 "also works"),
  H and W from 200 to 256: mmcaps feeds 224 × 224 centre crops of 32-frame windows. The release gives no frame
  rate; the MIL-NCE paper samples clips at 10 fps (32 frames = 3.2 s), the registry's default (configurable).
  T, H and W must be even (the space-to-depth stem halves them).
- the stem is the TPU "space-to-depth" variant: each 2×2×2 block of pixels becomes 8 × 3 = 24 channels (ordered
  time offset, row offset, column offset, colour), then a 2×4×4 convolution padded (1, 2, 2) whose first output
  plane, row and column are dropped (TensorFlow's SAME padding).
- the max-pools outside the inception blocks pad like TensorFlow's SAME (zeros, the larger half after) and round
  up; the inputs are non-negative (after ReLU or gating), so zero padding equals TensorFlow's.
- features are ``mixed_5c`` averaged over time and space (1024-d, the release's "for downstream tasks");
  :meth:`S3DHowTo100M.video_embedding` adds the 512-d projection ``fc`` of the joint text-video space.
- the file also holds the text tower (``text_module``: 66 250 × 300 word embeddings, 300 → 2048 → 512), kept
  here so the file loads strictly; the feature stream drops it after loading.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.extract.registry import RANDOM, StreamConfig
from pipeline.extract.stream_weights import StreamModel, calibrate_bn_3d, load_strict, read_state_dict, weights_id

# (name, in, branch 0, branch 1 reduce, branch 1, branch 2 reduce, branch 2, branch 3): the inception blocks.
BLOCKS = (
    ("mixed_3b", 192, 64, 96, 128, 16, 32, 32),
    ("mixed_3c", 256, 128, 128, 192, 32, 96, 64),
    ("mixed_4b", 480, 192, 96, 208, 16, 48, 64),
    ("mixed_4c", 512, 160, 112, 224, 24, 64, 64),
    ("mixed_4d", 512, 128, 128, 256, 24, 64, 64),
    ("mixed_4e", 512, 112, 144, 288, 32, 64, 64),
    ("mixed_4f", 528, 256, 160, 320, 32, 128, 128),
    ("mixed_5b", 832, 256, 160, 320, 32, 128, 128),
    ("mixed_5c", 832, 384, 192, 384, 48, 128, 128),
)
VOCABULARY = 66250  # rows of the word embedding (s3d_dict.npy's words + padding index 0)
WORD_DIM, TEXT_HIDDEN, JOINT_DIM, VIDEO_DIM = 300, 2048, 512, 1024
MAX_WORDS = 16  # s3dg.Sentence_Embedding(max_words=16): tokens per sentence, zero-padded or cut
_WORD = re.compile(r"[\w']+")  # s3dg.Sentence_Embedding._split_text
GET_DICTIONARY = "s3d_dict.npy (the S3D_HowTo100M README: https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/)"


class ConvUnit(nn.Module):
    """Conv3d (no bias) → BatchNorm → ReLU; ``separable``: a (1, k, k) spatial unit then a (k, 1, 1) temporal one."""

    def __init__(self, cin: int, cout: int, k: int | tuple[int, int, int], pad=0, separable: bool = False) -> None:
        super().__init__()
        self.separable = separable
        if separable:
            assert isinstance(k, int) and isinstance(pad, int)
            self.conv1 = nn.Conv3d(cin, cout, (1, k, k), padding=(0, pad, pad), bias=False)
            self.bn1 = nn.BatchNorm3d(cout)
            self.conv2 = nn.Conv3d(cout, cout, (k, 1, 1), padding=(pad, 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(cout)
        else:
            self.conv1 = nn.Conv3d(cin, cout, k, padding=pad, bias=False)
            self.bn1 = nn.BatchNorm3d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x))) if self.separable else x


class Gate(nn.Module):
    """S3D-G's feature gating: channels scaled by sigmoid(W · mean over T, H, W + b)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))[:, :, None, None, None]


class Inception(nn.Module):
    """Four gated branches: 1×1×1; 1×1×1 → separable 3×3×3 (twice); 3×3×3 max-pool → 1×1×1; concatenated."""

    def __init__(self, cin: int, b0: int, b1a: int, b1: int, b2a: int, b2: int, b3: int) -> None:
        super().__init__()
        self.conv_b0 = ConvUnit(cin, b0, 1)
        self.conv_b1_a = ConvUnit(cin, b1a, 1)
        self.conv_b1_b = ConvUnit(b1a, b1, 3, pad=1, separable=True)
        self.conv_b2_a = ConvUnit(cin, b2a, 1)
        self.conv_b2_b = ConvUnit(b2a, b2, 3, pad=1, separable=True)
        self.conv_b3_b = ConvUnit(cin, b3, 1)
        self.gating_b0, self.gating_b1, self.gating_b2, self.gating_b3 = Gate(b0), Gate(b1), Gate(b2), Gate(b3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.gating_b0(self.conv_b0(x))
        b1 = self.gating_b1(self.conv_b1_b(self.conv_b1_a(x)))
        b2 = self.gating_b2(self.conv_b2_b(self.conv_b2_a(x)))
        b3 = self.gating_b3(self.conv_b3_b(F.max_pool3d(x, 3, stride=1, padding=1)))
        return torch.cat([b0, b1, b2, b3], dim=1)


def same_max_pool(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """TensorFlow-SAME max-pool of non-negative ``[B, C, T, H, W]``: zero padding max(k - s, 0) per dimension, the
    larger half after, then a pool that rounds up."""
    pad: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride), strict=True):  # F.pad lists the last dimension first
        along = max(k - s, 0)
        pad += [along // 2, along - along // 2]
    return F.max_pool3d(F.pad(x, pad), kernel, stride, ceil_mode=True)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W] → [B, 8C, T/2, H/2, W/2]``, channels ordered (time offset, row offset, column offset, C)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // 2, 2, h // 2, 2, w // 2, 2).permute(0, 3, 5, 7, 1, 2, 4, 6)
    return x.reshape(b, 8 * c, t // 2, h // 2, w // 2)


class TextTower(nn.Module):
    """The release's sentence module: word embeddings → ReLU(fc1) → max over words → fc2 (``[B, words] → [B, 512]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.word_embd = nn.Embedding(VOCABULARY, WORD_DIM)
        self.fc1 = nn.Linear(WORD_DIM, TEXT_HIDDEN)
        self.fc2 = nn.Linear(TEXT_HIDDEN, JOINT_DIM)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.word_embd(tokens))).amax(dim=1))


def load_word_dictionary(path: str | Path) -> dict[str, int]:
    """``s3d_dict.npy`` → word → token (the word at position i is token i + 1; 0 pads), as ``s3dg.py`` builds it.

    The release's loader is ``np.load(path)``, which refuses object arrays (pickles) since numpy 1.16.3, so the file
    is a plain 1-d unicode array; it is read here with ``allow_pickle=False``, nothing is unpickled. A word listed
    twice maps to its last position (the reference's dict assignment in a loop).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{path}: MIL-NCE word dictionary not found; get {GET_DICTIONARY}")
    try:
        words = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as exc:  # an object array (pickle) or not an .npy file at all
        raise ValueError(
            f"{path}: not a plain .npy array of words ({' '.join(str(exc).split())}); the release's s3d_dict.npy is "
            "one; rewrite a pickled list once with np.save(path, np.array(list_of_words, dtype=str))"
        ) from exc
    if not isinstance(words, np.ndarray) or words.ndim != 1 or words.dtype.kind != "U":
        raise ValueError(
            f"{path}: expected a 1-d unicode array of words (s3d_dict.npy), got {words.dtype} {words.shape}"
        )
    if len(words) > VOCABULARY:
        raise ValueError(f"{path}: {len(words)} words, more than the text tower's {VOCABULARY} embeddings")
    # a token past the embedding (a 66 250th word, if the file has one) would fail in the reference: left out here
    return {str(word): i + 1 for i, word in enumerate(words) if i + 1 < VOCABULARY}


def sentence_words(text: str) -> list[str]:
    """The words the release's tokeniser sees in ``text``: lower-cased, then ``re.findall(r"[\\w']+", ...)``."""
    return _WORD.findall(str(text.lower()))


def sentence_tokens(text: str, vocabulary: dict[str, int], max_words: int = MAX_WORDS) -> tuple[list[int], int]:
    """One sentence → (``max_words`` tokens, known words used), as ``Sentence_Embedding._words_to_ids``: lower-cased,
    split on ``[\\w']+``, unknown words dropped *before* the cut to ``max_words``, zero-padded. A sentence without a
    known word is all zeros (the tower still embeds it: token 0 is a trained row, and the max runs over the padding
    too)."""
    known = [vocabulary[w] for w in sentence_words(text) if w in vocabulary]
    used = known[:max_words]
    return used + [0] * (max_words - len(used)), len(used)


class S3DHowTo100M(nn.Module):
    """S3D-G (space-to-depth stem, gated): ``[B, 3, T, H, W]`` in [0, 1] → ``[B, 1024]`` (mixed_5c, mean-pooled)."""

    def __init__(self, text: bool = True) -> None:
        super().__init__()
        self.conv1 = ConvUnit(24, 64, (2, 4, 4), pad=(1, 2, 2))
        self.conv_2b = ConvUnit(64, 64, 1)
        self.conv_2c = ConvUnit(64, 192, 3, pad=1, separable=True)
        self.gating = Gate(192)
        for name, *channels in BLOCKS:
            self.add_module(name, Inception(*channels))
        self.fc = nn.Linear(VIDEO_DIM, JOINT_DIM)
        self.text_module = TextTower() if text else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(space_to_depth(x))[:, :, 1:, 1:, 1:]  # TensorFlow SAME padding of the stem
        x = same_max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.gating(self.conv_2c(self.conv_2b(x)))
        x = same_max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.mixed_3c(self.mixed_3b(x))
        x = same_max_pool(x, (3, 3, 3), (2, 2, 2))
        for name in ("mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f"):
            x = getattr(self, name)(x)
        x = same_max_pool(x, (2, 2, 2), (2, 2, 2))
        x = self.mixed_5c(self.mixed_5b(x))
        return x.mean(dim=(2, 3, 4))  # (b, 1024)

    def video_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, T, H, W] → [B, 512]``: the joint text-video space (dot products with the text tower's output)."""
        return self.fc(self(x))


def build_s3d(cfg: StreamConfig, *, seed: int) -> StreamModel:
    """S3D (eval, CPU) for the ``s3d-howto100m`` stream; a weights file must load strictly (text tower included)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = S3DHowTo100M(text=cfg.weights != RANDOM)
    if cfg.weights != RANDOM:
        state = read_state_dict(cfg.weights, "s3d-howto100m")
        load_strict(net, state, where=cfg.weights, arch="S3D HowTo100M (s3d_howto100m.pth)")
        net.text_module = None  # the stream uses the video tower only
        ident = weights_id(cfg.weights)
    else:
        calibrate_bn_3d(net, seed, frames=8, size=64, mean=(0.0,) * 3, std=(1.0,) * 3)
        ident = f"random:s3d-howto100m:seed{seed}"
    spec = cfg.spec
    return StreamModel(net=net.eval(), dim=VIDEO_DIM, weights_id=ident, kind="clip", resize=spec.size, crop=spec.size)
