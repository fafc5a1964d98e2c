"""Process-group setup for ``torchrun`` (gloo on CPU, nccl on GPU) and the collectives training needs.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything degrades to a single process and
the collectives are identities.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested, but CUDA is not available")
        return torch.device("cuda", local_rank)
    if preference != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {preference!r}")
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_rows(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Every rank's rows in rank order (rank r contributes ``sizes[r]`` rows); the local rows keep their
    gradient, the others are constants. Each rank computes the full-batch loss, so summing the per-rank
    gradients (``loss * world_size`` under DDP's averaging) gives exactly the single-process gradient."""
    if not _active():
        return local
    width = max(sizes)
    padded = torch.cat([local, local.new_zeros(width - len(local), *local.shape[1:])]) if len(local) < width else local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.detach().contiguous())
    parts[dist.get_rank()] = padded
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (all ranks must stop at the same step)."""
    if not _active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_gather_object(obj: Any) -> list[Any]:
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if _active():
        dist.barrier()
