"""``ImportConfig``: how public per-video feature files become a dataset, and what the import records about them.

Imported streams get stream fingerprints of their own, made from the layout they came in (the provenance), never
those of extraction: features computed elsewhere are not the bytes mmcaps would compute from the video, so they
must not share feature-store entries with extracted ones. Text is the exception: an import encodes the captions
with the recipe's word vectors exactly as extraction does, so its text entries are extraction's (same fingerprint,
same bytes, shared).

Streams and what an import stores in them (pipeline/ingest/README.md "Reproducing the paper"):

==========  ======================================================================================================
stream      imported from
==========  ======================================================================================================
``rgb2d``   ``[T, 2048]`` rows at 1 per second (video_feature_extractor's 2D ResNet-152), stored float16 as given
``rgb3d``   ``[T, 2048]`` rows at 1.5 per second (its 3D ResNeXt-101), stored float16 as given
``audio``   vfe: mmcaps's own log-mel ``[40, Ta]`` (the ``mel/`` folder ``mmcaps export`` writes; the public
            extractor has no audio). avlnet: ``_spec.npz`` from AVLnet's ``audio_to_spectrograms.py``: the same
            spectral recipe as :mod:`pipeline.extract.audio` (DC removal, pre-emphasis 0.97, STFT 400/160 with a
            symmetric Hamming window, 40 Slaney mels from 20 Hz, ``power_to_db(ref=max)``, 100 frames/s), but its
            16 kHz waveform comes from sox (``gain -4 channels 1 rate 16000``) where mmcaps decodes with ffmpeg,
            and ``LoadAudio`` pads with 0 dB (the loudest level); so it is mapped to the audio stream under a
            fingerprint of its own (never mixed with extracted mel), its trailing all-zero padding columns removed
``text``    captions (HowTo100M ``caption.json``/``raw_caption.json``, joined by video id) encoded by the recipe's
            ``text`` section: :class:`pipeline.extract.text.WordVectors`, as extraction encodes them
==========  ======================================================================================================
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from model.fingerprint import FingerprintedConfig, content_fingerprint, runtime_field
from pipeline.extract.config import ExtractConfig

Layout = Literal["vfe", "avlnet"]
IMPORTER_VERSION = 1  # bump when an import's stored bytes for the same files change
DIM = 2048  # columns of both visual streams (ResNet-152 and ResNeXt-101 pooled features)
N_MELS = 40
ROWS_PER_S = {"rgb2d": 1.0, "rgb3d": 24.0 / 16.0, "audio": 100.0}  # storage/README.md "Shard sample"

LAYOUT_NOTES = {
    "vfe": "video_feature_extractor (antoine77340): one .npy per video and stream, 2D and 3D folders with the same "
    "relative paths, listed by folder walk or by a CSV with video_id and path",
    "avlnet": "AVLnet (roudimit) training layout: <path>/<video_id>_2d.npz, _3d.npz ('features') and _spec.npz "
    "('arr_0'), listed by a HowTo100M_1166_videopaths.txt-style file",
}
AUDIO_RECIPES = {
    "vfe": "mmcaps log-mel (pipeline.extract.audio), as mmcaps export writes it",
    "avlnet": "AVLnet audio_to_spectrograms.py: sox 16 kHz mono (gain -4), librosa log-mel 40 bands from 20 Hz, "
    "n_fft 400, hop 160, symmetric Hamming, power_to_db(ref=max); trailing all-zero (0 dB) padding columns removed",
}


class ImportConfig(FingerprintedConfig):
    """How a layout of per-video feature files is imported. ``ImportConfig()`` is the vfe layout with default
    checks; ``recipe.text.word2vec`` should name the word vectors the captions are encoded with."""

    layout: Layout = "vfe"
    # The recipe the imported features follow, as an ExtractConfig: its text section encodes the captions; the
    # rest is how videos are extracted for a model trained on this dataset (evaluation on raw videos), so set the
    # backbones' weights the release used (rgb2d.weights=IMAGENET1K_V1, rgb3d.weights=resnext101.pth). It is
    # written beside the shards as the dataset's extract-config.yaml.
    recipe: ExtractConfig = Field(default_factory=ExtractConfig)
    # Checks: a stream whose rows cover a length (rows / rate) further than tolerance_s + tolerance_ratio x the
    # video's length from it is a failed row naming the file (the video's length: the listing's duration column,
    # else the 2D rows at 1 per second). They decide which videos are admitted, not what is stored.
    tolerance_s: float = runtime_field(2.0, ge=0)
    tolerance_ratio: float = runtime_field(0.02, ge=0)

    def stream_fingerprints(self) -> dict[str, str]:
        """Each stream's fingerprint: the layout it came in and what the import does to it (README table above);
        text: the recipe's own (extraction's) text fingerprint."""
        visual = {"importer": IMPORTER_VERSION, "imported": self.layout, "dim": DIM, "stored": "float16 as given"}
        parts = {
            "rgb2d": {**visual, "rows_per_s": ROWS_PER_S["rgb2d"]},
            "rgb3d": {**visual, "rows_per_s": ROWS_PER_S["rgb3d"]},
            "audio": {"importer": IMPORTER_VERSION, "imported": self.layout, "recipe": AUDIO_RECIPES[self.layout],
                      "mels": N_MELS, "frames_per_s": ROWS_PER_S["audio"], "stored": "float16"},
        }  # fmt: skip
        out = {name: content_fingerprint(f"stream:{name}", payload) for name, payload in parts.items()}
        out["text"] = self.recipe.stream_fingerprints()["text"]
        return out

    def fingerprint_payload(self) -> dict[str, Any]:
        # The shard folder: the streams together, and the recipe (evaluation extracts new videos by it).
        return {"streams": self.stream_fingerprints(), "recipe": self.recipe.fingerprint()}

    def text_recipe(self) -> ExtractConfig:
        """The recipe's text section alone: what encodes the captions (an extractor of it checks no backbone
        weights, so an import never needs the video networks' files)."""
        return ExtractConfig(text=self.recipe.text)

    def resolved(self) -> ImportConfig:
        """The recipe's ``auto`` precision made concrete (what extract-config.yaml records)."""
        return self.model_copy(update={"recipe": self.recipe.resolved()})

    def recipe_yaml(self) -> str:
        """extract-config.yaml beside the shards: the recipe, headed by what was imported (YAML comments)."""
        head = (
            f"# mmcaps import ({self.layout}): {LAYOUT_NOTES[self.layout]}.\n"
            f"# The streams were imported, not extracted (import fingerprint {self.fingerprint()}; see import-config.yaml).\n"
            "# This recipe encoded the captions and is how new videos are extracted for a model trained here.\n"
        )
        return head + self.recipe.to_yaml()
