"""The multimodal capsule network (paper figure 1) and the two baselines of table 5, behind ``build_model``.

Per modality: an encoder (identity for the 4096-d video and 300-d text vectors, ResDAVEnet for audio), then
either primary capsules → routing → ``f_out`` (``capsules``), two linear layers (``fully_connected``), or
chunks → one self-attention layer → a linear map (``plain_self_attention``). All give [B, D] embeddings that
are compared by dot product.

Axis letters: b batch, c capsules, d1/d2 pose sizes, n chunks, w chunk width, D joint embedding size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from model.encoders import ResDAVEnet
from model.routing import make_routing
from model.routing._attention import multi_head_attention

if TYPE_CHECKING:  # annotations only: the network reads attributes, so it builds without pydantic (flows.bench.gpu)
    from model.config import CapsuleConfig

MODALITIES = ("video", "audio", "text")


@dataclass
class ModelOutput:
    """``embeddings``: modality → [B, D]; ``activations``: modality → [B, C] secondary-capsule activations
    (capsule architecture only; empty for the baselines). Only the modalities given to ``forward`` appear."""

    embeddings: dict[str, torch.Tensor]
    activations: dict[str, torch.Tensor] = field(default_factory=dict)


class PrimaryCapsules(nn.Module):
    """One linear layer from a feature vector to C poses (d1) and C activations (sigmoid, in [0, 1])."""

    def __init__(self, *, in_dim: int, num_capsules: int, d1: int) -> None:
        super().__init__()
        self.num_capsules = num_capsules
        self.d1 = d1
        self.linear = nn.Linear(in_dim, num_capsules * (d1 + 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [b, in_dim] → (poses [b, c, d1], activations [b, c])."""
        out = rearrange(self.linear(x), "b (c k) -> b c k", c=self.num_capsules)  # (b, c, d1 + 1)
        return out[..., : self.d1], torch.sigmoid(out[..., self.d1])


def build_routing(cfg: CapsuleConfig) -> nn.Module:
    """The router ``cfg.routing`` with the capsule sizes and routing settings of ``cfg`` (as in the network)."""
    return make_routing(
        cfg.routing,
        num_capsules=cfg.num_capsules,
        d1=cfg.d1,
        d2=cfg.d2,
        heads=cfg.heads,
        mlp_hidden=cfg.mlp_hidden,
        dropout=cfg.dropout,
        iterations=cfg.routing_iterations,
        em_inverse_temperature=cfg.em_inverse_temperature,
        set_blocks=cfg.set_blocks,
    )


class CapsuleHead(nn.Module):
    """Routing, then ``f_out``: a linear map of the activation-weighted secondary capsules (flattened) to D."""

    def __init__(self, cfg: CapsuleConfig) -> None:
        super().__init__()
        self.routing = build_routing(cfg)
        self.f_out = nn.Linear(cfg.num_capsules * cfg.d2, cfg.embed_dim)

    def forward(self, poses: torch.Tensor, activations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """poses: [b, c, d1], activations: [b, c] (primary) → (embedding [b, D], secondary activations [b, c])."""
        sec_poses, sec_acts = self.routing(poses, activations)  # (b, c, d2), (b, c)
        weighted = rearrange(sec_poses * sec_acts[..., None], "b c d -> b (c d)")
        return self.f_out(weighted), sec_acts


class PlainSelfAttentionBranch(nn.Module):
    """Table 5's self-attention baseline for one modality: the feature is zero-padded to a multiple of N and
    cut into N equal chunks; each chunk is embedded to a d1-wide token; one multi-head self-attention layer
    (residual, LayerNorm) mixes the tokens; a linear map of the flattened tokens gives the embedding."""

    def __init__(self, *, in_dim: int, chunks: int, width: int, heads: int, embed_dim: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.chunk_width = -(-in_dim // chunks)  # ceil
        self.pad = self.chunks * self.chunk_width - in_dim
        self.heads = heads
        self.embed = nn.Linear(self.chunk_width, width)
        self.to_q = nn.Linear(width, width)
        self.to_k = nn.Linear(width, width)
        self.to_v = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(chunks * width, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [b, in_dim] → [b, D]."""
        x = F.pad(x, (0, self.pad))
        tokens = self.embed(rearrange(x, "b (n w) -> b n w", n=self.chunks))  # (b, n, d1)
        attn = multi_head_attention(self.to_q(tokens), self.to_k(tokens), self.to_v(tokens), heads=self.heads)
        tokens = self.norm(tokens + attn)  # (b, n, d1)
        return self.out(rearrange(tokens, "b n d -> b (n d)"))


class MultimodalNet(nn.Module):
    """Shared front end and ``forward`` of all architectures; subclasses define ``branch(modality, features)``.

    ``forward(video=[B, video_dim] | None, audio=[B, n_mels, L] | None, audio_lengths=Long[B] | None,
    text=[B, text_dim] | None) -> ModelOutput``.
    """

    def __init__(self, cfg: CapsuleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = ResDAVEnet(
            n_mels=cfg.n_mels,
            stem_width=cfg.audio_stem_width,
            widths=cfg.audio_widths,
            blocks_per_stage=cfg.audio_blocks_per_stage,
            kernel=cfg.audio_kernel,
        )

    def branch(self, modality: str, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features: [b, input_dims[modality]] → (embedding [b, D], secondary activations [b, c] or None)."""
        raise NotImplementedError

    def _check_vector(self, name: str, x: torch.Tensor) -> torch.Tensor:
        want = self.cfg.input_dims()[name]
        if x.dim() != 2 or x.shape[1] != want:
            raise ValueError(f"{name} input must be [batch, {want}], got {tuple(x.shape)}")
        return x

    def features(self, modality: str, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder output [b, input_dims[modality]]: identity for video and text, pooled ResDAVEnet for audio."""
        if modality == "audio":
            return self.audio_encoder(x, lengths)
        if modality in ("video", "text"):
            return self._check_vector(modality, x)
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """video: [b, video_dim] pooled 2D+3D features → [b, D]."""
        return self.branch("video", self.features("video", video))[0]

    def encode_audio(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """mel: [b, n_mels, L] log-mel; lengths: Long[b] valid frames (None: all) → [b, D]."""
        return self.branch("audio", self.features("audio", mel, lengths))[0]

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """text: [b, text_dim] max-pooled word2vec → [b, D]."""
        return self.branch("text", self.features("text", text))[0]

    def forward(
        self,
        video: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
        audio_lengths: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Embeddings [B, D] (and secondary activations [B, C]) for each modality given."""
        inputs = {"video": video, "audio": audio, "text": text}
        out = ModelOutput(embeddings={})
        for name, x in inputs.items():
            if x is None:
                continue
            emb, acts = self.branch(name, self.features(name, x, audio_lengths if name == "audio" else None))
            out.embeddings[name] = emb
            if acts is not None:
                out.activations[name] = acts
        if not out.embeddings:
            raise ValueError("forward needs at least one of video, audio, text")
        return out


class CapsuleNetwork(MultimodalNet):
    """The paper's model: per-modality primary capsules; routing and ``f_out`` shared across modalities
    (``shared_weights``) or one per modality."""

    def __init__(self, cfg: CapsuleConfig) -> None:
        super().__init__(cfg)
        self.primary = nn.ModuleDict(
            {
                m: PrimaryCapsules(in_dim=d, num_capsules=cfg.num_capsules, d1=cfg.d1)
                for m, d in cfg.input_dims().items()
            }
        )
        # One module registered once when shared, so the state dict has no duplicate keys.
        self.heads = nn.ModuleDict(
            {"shared": CapsuleHead(cfg)} if cfg.shared_weights else {m: CapsuleHead(cfg) for m in MODALITIES}
        )

    def head(self, modality: str) -> CapsuleHead:
        """The routing + f_out module used for ``modality``."""
        return self.heads["shared" if self.cfg.shared_weights else modality]  # type: ignore[return-value]

    def branch(self, modality: str, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        poses, acts = self.primary[modality](features)  # (b, c, d1), (b, c)
        return self.head(modality)(poses, acts)


class FullyConnectedNetwork(MultimodalNet):
    """Table 5's fully connected baseline: two linear layers (ReLU between) per modality."""

    def __init__(self, cfg: CapsuleConfig) -> None:
        super().__init__(cfg)
        hidden = cfg.fc_hidden or cfg.embed_dim
        self.mlps = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.embed_dim)
                )
                for m, d in cfg.input_dims().items()
            }
        )

    def branch(self, modality: str, features: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.mlps[modality](features), None


class PlainSelfAttentionNetwork(MultimodalNet):
    """Table 5's self-attention baseline (no capsules): see :class:`PlainSelfAttentionBranch`."""

    def __init__(self, cfg: CapsuleConfig) -> None:
        super().__init__(cfg)
        self.branches = nn.ModuleDict(
            {
                m: PlainSelfAttentionBranch(
                    in_dim=d, chunks=cfg.plain_chunks, width=cfg.d1, heads=cfg.heads, embed_dim=cfg.embed_dim
                )
                for m, d in cfg.input_dims().items()
            }
        )

    def branch(self, modality: str, features: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.branches[modality](features), None


_ARCHITECTURES: dict[str, type[MultimodalNet]] = {
    "capsules": CapsuleNetwork,
    "fully_connected": FullyConnectedNetwork,
    "plain_self_attention": PlainSelfAttentionNetwork,
}


def build_model(cfg: CapsuleConfig) -> MultimodalNet:
    """The network that ``cfg.architecture`` names (raises ``ValueError`` on an unknown one)."""
    try:
        cls = _ARCHITECTURES[cfg.architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {cfg.architecture!r}; expected one of {', '.join(_ARCHITECTURES)}"
        ) from None
    return cls(cfg)
