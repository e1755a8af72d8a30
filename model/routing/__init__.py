"""Routing between primary and secondary capsules: one module per method, one factory, one signature.

Every router maps ``(poses [B, C, d1], activations [B, C])`` to ``(poses [B, C, d2], activations [B, C])``;
the returned activations sum to 1 over the C capsules. A primary capsule with activation 0 has no influence.
"""

from __future__ import annotations

from torch import nn

from model.routing.dynamic import DynamicRouting
from model.routing.em import EMRouting
from model.routing.none import NoRouting
from model.routing.self_attention import SelfAttentionRouting
from model.routing.set_transformer import SetTransformerRouting

ROUTING_METHODS = ("self_attention", "dynamic", "em", "set_transformer", "none")


def make_routing(
    name: str,
    *,
    num_capsules: int,
    d1: int,
    d2: int,
    heads: int = 8,
    mlp_hidden: int = 1024,
    dropout: float = 0.1,
    iterations: int = 3,
    em_inverse_temperature: float = 0.01,
    set_blocks: int = 1,
) -> nn.Module:
    """The router called ``name`` (one of :data:`ROUTING_METHODS`); raises ``ValueError`` on an unknown name."""
    if name == "self_attention":
        return SelfAttentionRouting(d1=d1, d2=d2, heads=heads, mlp_hidden=mlp_hidden, dropout=dropout)
    if name == "dynamic":
        return DynamicRouting(num_capsules=num_capsules, d1=d1, d2=d2, iterations=iterations)
    if name == "em":
        return EMRouting(
            num_capsules=num_capsules, d1=d1, d2=d2, iterations=iterations,
            final_inverse_temperature=em_inverse_temperature,
        )  # fmt: skip
    if name == "set_transformer":
        return SetTransformerRouting(
            d1=d1, d2=d2, heads=heads, mlp_hidden=mlp_hidden, dropout=dropout, blocks=set_blocks
        )
    if name == "none":
        return NoRouting(d1=d1, d2=d2, mlp_hidden=mlp_hidden, dropout=dropout)
    raise ValueError(f"unknown routing {name!r}; expected one of {', '.join(ROUTING_METHODS)}")


__all__ = [
    "ROUTING_METHODS",
    "DynamicRouting",
    "EMRouting",
    "NoRouting",
    "SelfAttentionRouting",
    "SetTransformerRouting",
    "make_routing",
]
