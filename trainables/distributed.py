"""What the N workers of one run must agree on, so that a run means the same with 1 worker or 4.

- Seeds: the data order comes from the run's seed (a `DistributedSampler` of ours: Ray's
  `prepare_data_loader` would seed it with 0 and drop the loader's other settings); each rank draws
  augmentation and dropout from its own stream, derived from the run's seed and its rank.
- Figures: training sums are added over ranks; validation is sharded over ranks without padding and
  gathered, so every rank computes the figures a one-process evaluation gives.
- Resume: each rank's random state is gathered into the checkpoint and handed back to that rank.
- Steps: a rank whose batch was all unreadable must not skip a step its peers take (a collective
  would wait for it forever), so ranks agree first.
Every function works without a process group (one worker). No Ray Tune or MLflow here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def mixed_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (seed, rank, ...): distinct keys never give neighbouring seeds.

    `seed + rank` would give seed 0's rank 1 the stream of seed 1's rank 0, and `DistributedSampler`'s
    `seed + epoch` would give seed 1 the orders seed 0 uses one epoch later.
    """
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]) >> 1


def seed_rank(seed: int, rank: int) -> None:
    """This rank's own stream for augmentation, dropout and loader seeds."""
    torch.manual_seed(mixed_seed(seed, rank))


def train_sampler(dataset, seed: int, rank: int, world: int) -> torch.utils.data.DistributedSampler:
    """The training order: a permutation per (run seed, epoch) split over ranks (`set_epoch` each epoch).

    The tail that does not divide among ranks is left out (no padding duplicates); with one worker it is
    a plain shuffle.
    """
    return torch.utils.data.DistributedSampler(
        dataset, num_replicas=world, rank=rank, shuffle=True, seed=mixed_seed(seed), drop_last=True
    )


def shard(n: int, rank: int, world: int) -> list[int]:
    """This rank's positions of `n` items: every world-th, no padding."""
    return list(range(rank, n, world))


def sum_over_ranks(values: dict[str, Any], device) -> dict[str, float]:
    """Named numbers (floats or 0-d tensors) summed over ranks in one all-reduce (float64)."""
    if not values:
        return {}
    stacked = torch.stack(
        [torch.as_tensor(v, device=device).detach().to(torch.float64).reshape(()) for v in values.values()]
    )
    if world_size() > 1:
        dist.all_reduce(stacked)
    return dict(zip(values, stacked.tolist()))


def all_ranks_have(flag: bool, device) -> bool:
    """Whether `flag` holds on every rank (one tiny all-reduce): e.g. each rank has a batch to step on."""
    if world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def share_rank0_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank's last training forward
    updated its own, and rank 0's are the ones the checkpoint keeps and the sharded evaluation must use."""
    if world_size() == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random state this rank draws from: augmentation, dropout, loader seeds, the GPU's."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
