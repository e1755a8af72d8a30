"""Compare mmcaps's S3D with the release's own code (not a test: the release is not a dependency).

    git clone https://github.com/antoine77340/S3D_HowTo100M /tmp/s3d-ref
    .venv/bin/python tests/pipeline/extract/reference_s3d.py /tmp/s3d-ref [frames] [size]

Both networks get the same seeded random state dict (BatchNorm statistics randomised too) and the same clip in
[0, 1]; prints the largest absolute difference and the row cosine of ``mixed_5c`` (1024-d) and of the 512-d video
embedding. With the released ``s3d_howto100m.pth`` pass its path as a fourth argument instead of random weights.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.extract.s3d import S3DHowTo100M


def main() -> None:
    ref_dir, frames, size = (
        sys.argv[1],
        int(sys.argv[2]) if len(sys.argv) > 2 else 32,
        int(sys.argv[3]) if len(sys.argv) > 3 else 224,
    )
    sys.path.insert(0, ref_dir)
    import s3dg  # the release's module

    with tempfile.TemporaryDirectory() as tmp:
        words = Path(tmp) / "dict.npy"
        np.save(words, np.array(["open", "door"]))  # the word list only maps words to ids; shapes do not depend on it
        ref = s3dg.S3D(str(words), 512).eval()
    if len(sys.argv) > 4:
        state = torch.load(sys.argv[4], map_location="cpu", weights_only=True)
    else:
        torch.manual_seed(0)
        state = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in ref.state_dict().items()}
        state = {k: (torch.rand_like(v) + 0.5 if k.endswith("running_var") else v) for k, v in state.items()}
    ref.load_state_dict(state, strict=True)
    ours = S3DHowTo100M().eval()
    ours.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, frames, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        r = ref(x)
        pooled, emb = ours(x), ours.video_embedding(x)
    for name, a, b in (("mixed_5c", r["mixed_5c"], pooled), ("video_embedding", r["video_embedding"], emb)):
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1).min().item()
        print(
            f"{name}: {tuple(a.shape)} max |diff| {(a - b).abs().max().item():.3g} (max |ref| {a.abs().max().item():.3g}), min cos {cos:.7f}"
        )


if __name__ == "__main__":
    main()
