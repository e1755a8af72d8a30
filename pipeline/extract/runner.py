"""How a backbone is run for inference: BatchNorm folded, chosen layout and precision, optionally compiled.

None of this changes what a backbone computes beyond rounding:

- **BatchNorm folding.** In eval mode a BatchNorm after a convolution is an affine map per output channel, so it is
  folded into the convolution's weight and bias (``torch.fx`` pattern fusion). One op fewer per layer; in fp32
  the features agree with the unfolded network to ~1e-6.
- **Layout.** Channels-last (2D) / channels-last-3d (3D) for weights and inputs: oneDNN's fast convolutions.
- **Precision.** ``bf16`` casts the (folded) weights to bfloat16 once and feeds bfloat16 inputs. Autocast would
  re-cast every weight on every call, and on this kind of CPU (AVX-512 BF16 / AMX) that cast is a visible share
  of a ResNet-152 batch.
- **Compilation** (``compile=True``): ``torch.compile`` with Inductor's weight freezing, so convolutions run on
  pre-packed oneDNN weights with fused epilogues. Shapes are kept static and batches are padded with zero rows
  up to a power of two (at most ``max_batch``), so a run compiles a handful of graphs (per input size and batch
  bucket) and never recompiles per video; padding is exact because the folded eval-mode network treats every
  row independently. Compiling costs seconds per graph (cached by Inductor on disk across processes), so it
  pays for long extractions, not for a two-second test clip. If compilation fails (no C++ compiler, an
  unsupported op) the runner says so once and runs eagerly.
"""

from __future__ import annotations

import copy
import logging
import threading
from typing import Literal

import torch
import torch._inductor.config as inductor_config
from torch import nn

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval mode) with every conv → BatchNorm pair folded into the conv; ``net`` is untouched.

    Networks that ``torch.fx`` cannot trace are returned as an unfolded copy (folding is an optimisation only).
    """
    from torch.fx.experimental.optimization import fuse  # noqa: PLC0415  deferred: torch.fx, only when fusing

    net = copy.deepcopy(net).eval()
    try:
        return fuse(net, inplace=True)
    except Exception as exc:  # tracing failed: keep the network as it is
        log.debug("BatchNorm folding skipped for %s: %s", type(net).__name__, exc)
        return net


def _bucket(n: int, max_batch: int) -> int:
    """Smallest power of two ≥ n, capped at ``max_batch`` (and at least n)."""
    b = 1
    while b < n:
        b *= 2
    return max(n, min(b, max_batch))


class NetRunner:
    """``runner(x)``: float32 ``[B, 3, ...]`` on the runner's device → float32 ``[B, D]`` features.

    ``memory_format``: ``torch.channels_last`` for 2D networks, ``torch.channels_last_3d`` for 3D ones.
    ``max_batch``: the largest batch the caller passes (with ``compile``, batches are padded up to a power of two
    no larger than it).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        device: torch.device,
        precision: Precision = "fp32",
        memory_format: torch.memory_format = torch.contiguous_format,
        compile: bool = False,
        max_batch: int = 16,
    ) -> None:
        self.device = device
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.memory_format = memory_format
        self.max_batch = max_batch
        self.net = fold_batchnorm(net).to(device=device, dtype=self.dtype, memory_format=memory_format)
        self._compiled = None
        self._lock = threading.Lock()
        if compile:
            # Freezing is switched on around each call (below) rather than through compile(options=...): measured
            # here, the options route gave a 15 % slower ResNeXt-101 graph than Inductor's own config switch.
            self._compiled = torch.compile(self.net, dynamic=False)
            # Each (input size, batch bucket) is one graph; leave room for many video sizes before dynamo gives up.
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)

    @property
    def compiled(self) -> bool:
        """Whether calls go through the compiled graph (False after a failed compilation)."""
        return self._compiled is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        with torch.inference_mode():
            if self._compiled is None:
                return self.net(x.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)).float()
            # Always a fresh inference tensor of the bucket's shape: the graph's guards see the same tensor kind
            # (layout, dtype, dispatch keys) on every call, so only a new shape compiles.
            size = _bucket(n, self.max_batch)
            padded = torch.empty(
                (size, *x.shape[1:]), device=self.device, dtype=self.dtype, memory_format=self.memory_format
            )
            padded[:n] = x
            padded[n:] = 0
            try:
                # Graphs compile lazily on a shape's first call: one caller at a time.
                with self._lock, inductor_config.patch(freezing=True):
                    y = self._compiled(padded)
            except Exception as exc:
                # Not an input error: the same call runs eagerly below and raises there if the input is bad.
                log.warning("torch.compile failed (%s: %s); running this backbone eagerly", type(exc).__name__, exc)
                self._compiled = None
                return self.net(padded[:n]).float()
            return y[:n].float()
