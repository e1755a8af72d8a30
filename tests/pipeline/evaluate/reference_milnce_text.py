"""Compare the MIL-NCE baseline's text side with the release's own code (not a test: the release is not a dependency).

    git clone https://github.com/antoine77340/S3D_HowTo100M /tmp/s3d-ref
    .venv/bin/python tests/pipeline/evaluate/reference_milnce_text.py /tmp/s3d-ref [s3d_dict.npy [s3d_howto100m.pth]]

Both get the same dictionary (a small one in the release's format when none is given) and the same text-tower
weights (seeded random, or the release's file); prints whether the token ids are equal for a set of sentences
(punctuation, apostrophes, unicode, unknown words, more than 16 words, none known) and the largest absolute
difference of the 512-d text embeddings.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.evaluate.baseline import load_milnce
from pipeline.evaluate.config import EvalConfig
from pipeline.extract.s3d import sentence_tokens

SENTENCES = [
    "Cut THE tomato, don't stop! Añadir-door",
    "open the door",
    "pour the water into the pan and stir the sauce slowly while the oil heats in the red pan on the stove top",
    "nothing known here zzz",
    "",
    "l'huile d'olive: 2 cuillères",
]
WORDS = ["cut", "the", "tomato", "don't", "añadir", "open", "door", "cut", "pour", "water", "pan", "stir", "red",
         "oil", "l'huile", "d'olive", "2", "into", "and"]  # fmt: skip


def main() -> None:
    ref_dir = sys.argv[1]
    sys.path.insert(0, ref_dir)
    import s3dg  # the release's module, from the clone named on the command line

    with tempfile.TemporaryDirectory() as tmp:
        dictionary = sys.argv[2] if len(sys.argv) > 2 else str(Path(tmp) / "s3d_dict.npy")
        if len(sys.argv) <= 2:
            np.save(dictionary, np.array(WORDS, dtype=str))
        weights = sys.argv[3] if len(sys.argv) > 3 else "random"
        ours = load_milnce(EvalConfig(baseline_weights=weights, baseline_dictionary=dictionary))
        ref = s3dg.Sentence_Embedding(512, token_to_word_path=dictionary)
        ref.load_state_dict(ours.text.state_dict())
        ref.eval()
        ref_ids = ref._words_to_ids(SENTENCES)
        our_ids = torch.tensor([sentence_tokens(s, ours.vocabulary)[0] for s in SENTENCES])
        print("token ids equal:", bool(torch.equal(ref_ids, our_ids)))
        with torch.no_grad():
            ref_emb = ref(SENTENCES)["text_embedding"]
        our_emb, _ = ours.embed_texts(SENTENCES)
        print("text embedding max |diff|:", float((ref_emb - our_emb).abs().max()))


if __name__ == "__main__":
    main()
