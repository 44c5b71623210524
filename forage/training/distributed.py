"""The trainer on many processes (``torchrun``): the process group, shards, gathers and the wrapped model.

How a step runs on N ranks (see :class:`~.trainer.Trainer`): each rank rolls out a contiguous share of
the step's episodes; the shares are gathered (in rank order, so the batch is the one a single process
would hold) and every rank computes the shaping, advantages, filters and replay bookkeeping on the whole
batch, identically (that state is replicated, so it is global by construction). The update is split:
each rank back-propagates its share of the trained episodes, normalised by the *whole* batch's token or
sequence count, and the gradients are reduced across ranks (``ddp``: all-reduced; ``fsdp``: FSDP2
``fully_shard`` reduce-scatters into parameter shards). The sum over ranks is the single-process gradient.

Collectives must match across ranks: DDP all-reduces at every backward and FSDP2 all-gathers at every
forward, so a rank with fewer micro-batches than another runs zero-loss passes (:func:`pad_passes`)
until both have made the same number.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch

from ..agents.trajectory import Trajectory
from .packing import pack_by_tokens, policy_tokens

__all__ = ["World", "launched", "init_world", "shard_bounds", "shard", "wrap_for_loss", "decoder_layers",
           "micro_batch_count", "pad_passes", "full_model_state", "ADDITIVE_STATS", "MAX_STATS"]

T = TypeVar("T")

# accumulate()'s figures: these are sums over tokens divided by the whole batch's count (add across ranks) ...
ADDITIVE_STATS = ("loss", "entropy", "clipfrac", "kl", "ratio_mean", "logp_gap", "cov_removed", "cov_penalised")
# ... and this one is a maximum
MAX_STATS = ("ratio_max_dev",)


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass(frozen=True)
class World:
    """This process's place in the job: its rank, the number of ranks, its local rank and the strategy."""

    rank: int
    size: int
    local_rank: int
    strategy: str = "ddp"            # ddp | fsdp

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, checkpoints and pushes weights to vLLM."""
        return self.rank == 0

    def gather(self, local: Sequence[T]) -> list[T]:
        """Every rank's list, concatenated in rank order (the same list on every rank)."""
        import torch.distributed as dist

        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, list(local))
        return [x for p in parts for x in p]

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (a list in rank order); None elsewhere."""
        import torch.distributed as dist

        parts: list[Any] | None = [None] * self.size if self.main else None
        dist.gather_object(obj, parts, dst=0)
        return parts

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def max_int(self, x: int) -> int:
        """The largest ``x`` over the ranks."""
        return max(int(v) for v in self.gather([x]))

    def reduce_stats(self, st: dict[str, float]) -> dict[str, float]:
        """:func:`~.update.accumulate`'s figures over all ranks (sums of the additive ones, max of the maxima)."""
        rows = self.gather([st])
        out = dict(st)
        for k in ADDITIVE_STATS:
            if k in st:
                out[k] = float(sum(r[k] for r in rows))
        for k in MAX_STATS:
            if k in st:
                out[k] = float(max(r[k] for r in rows))
        return out

    def broadcast_params(self, model: Any) -> None:
        """Rank 0's parameter values into every rank's replica (after work each rank did alike, e.g. the SFT)."""
        import torch.distributed as dist

        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p.data, src=0)

    def barrier(self) -> None:
        """Wait for every rank."""
        import torch.distributed as dist

        dist.barrier()


def init_world(strategy: str = "ddp", backend: str = "auto", timeout_s: int = 1800) -> World | None:
    """Join the process group torchrun described in the environment; None when not launched on several ranks.

    ``backend`` ``auto`` is NCCL with CUDA and gloo without; with CUDA each rank takes the GPU of its local rank.
    """
    if not launched():
        return None
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return World(dist.get_rank(), dist.get_world_size(), local, strategy)


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """[start, end) of rank ``rank``'s contiguous share of ``n`` items (the first ``n % size`` ranks get one more)."""
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} outside a world of {size}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(items: Sequence[T], world: World | None) -> list[T]:
    """This rank's contiguous share of ``items`` (all of them without a world)."""
    if world is None:
        return list(items)
    a, b = shard_bounds(len(items), world.rank, world.size)
    return list(items[a:b])


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The transformer blocks of a causal LM (the largest ``ModuleList``): FSDP2 shards each one separately."""
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return list(max(lists, key=len)) if lists else []


def wrap_for_loss(model: Any, world: World) -> Any:
    """The module the loss's forward and backward go through: ``DistributedDataParallel(model)`` (``ddp``),
    or ``model`` itself sharded in place by FSDP2's ``fully_shard`` (``fsdp``: build the optimizer after)."""
    if world.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(model):
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    on_gpu = next(model.parameters()).device.type == "cuda"
    ddp = DistributedDataParallel(model, device_ids=[world.local_rank] if on_gpu else None)
    ddp.forage_autocast = getattr(model, "forage_autocast", None)   # token_logps reads it off the module it calls
    return ddp


def micro_batch_count(trajs: Sequence[Trajectory], max_tokens: int) -> int:
    """How many forward passes :func:`~.update.accumulate` makes over ``trajs`` (its packing, minus the
    micro-batches without a policy token, which it skips)."""
    packs = pack_by_tokens([len(t.token_ids) for t in trajs], max_tokens)
    return sum(1 for idx in packs if any(policy_tokens(trajs[i]) > 0 for i in idx))


def pad_passes(model: Any, n: int, backward: bool) -> None:
    """``n`` forward passes (and zero-loss backward passes with ``backward``) on a one-token input, so this
    rank takes part in the collectives of the passes the other ranks still make; the gradients do not change."""
    if n <= 0:
        return
    device = next(model.parameters()).device
    ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    for _ in range(n):
        with torch.set_grad_enabled(backward):
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1, use_cache=False).logits
            if backward:
                (logits.float().sum() * 0.0).backward()


def full_model_state(model: Any, world: World | None, cpu_offload: bool = True) -> dict[str, torch.Tensor]:
    """The model's full (unsharded) state dict: with FSDP gathered from the shards (every rank must call;
    with ``cpu_offload`` only rank 0 receives it), otherwise the module's own."""
    if world is not None and world.strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload))
    return model.state_dict()
