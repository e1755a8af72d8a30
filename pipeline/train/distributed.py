"""Several training processes (torchrun, DDP): joining the process group, and the global batch of the loss.

The MMS loss contrasts every clip of a batch with every other. Under DDP each process embeds its own clips; to give
the loss the global batch (the paper's 4,096 clips over 4 GPUs, as AVLnet's DataParallel computes it), every
process gathers the embeddings of all processes and computes the loss over all of them. The gathered copies of the
other processes' rows carry no gradient; each process's own rows keep theirs (the usual all-gather of contrastive
training). Every process then computes the same global loss L but back-propagates it into its own rows only, so its
gradient is its own clips' share of dL/dθ; DDP averages those shares over the W processes, so the backward pass
scales the loss by W (:func:`loss_scale`) and the averaged gradient is exactly dL/dθ of one process holding the
concatenated batch. With the audio encoder's BatchNorm statistics summed over the processes as well
(``model.encoders.sync_batchnorm``), loss and gradients equal the single-process ones up to float rounding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.device import ddp_backend


@dataclass
class DistInfo:
    """This process's place in the process group (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_rank() -> int:
    """This process's rank under torchrun (RANK when WORLD_SIZE > 1), 0 otherwise; read before joining the group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    return int(os.environ.get("RANK", "0"))


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend=ddp_backend(device))  # nccl between GPUs, gloo between CPU processes
        here = True
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, initialised_here=here)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def gather_rows(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """[n, ...] on every process → [W·n, ...], processes in rank order; only this process's rows keep a gradient.

    Every process must pass the same shape (the loader gives each the same batch size).
    """
    if not info.distributed:
        return x
    parts = [torch.empty_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[info.rank] = x  # (n, ...) the live rows: the gradient path of this process
    return torch.cat(parts)


def gather_flags(flags: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Bool[n] on every process → Bool[W·n] in rank order (sent as uint8: not every backend reduces bools)."""
    if not info.distributed:
        return flags
    return gather_rows(flags.to(torch.uint8), info).bool()


def loss_scale(info: DistInfo, gathered: bool) -> float:
    """The factor of the backward pass: W when the loss is the global one (see the module doc), else 1."""
    return float(info.world_size) if gathered and info.distributed else 1.0
