"""Multi-process data parallel training through PyTorch's own launcher.

``torchrun --standalone --nproc_per_node=2 -m kernelscope train ...`` starts N copies of
the command with ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :func:`setup` joins them in
a process group (gloo on CPU, nccl on GPU). Every rank draws the same global batch and
takes its slice ``rank::world_size``; only rank 0 writes the run directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from kernelscope.errors import KernelscopeError

__all__ = ["Context", "setup", "teardown", "resolve_device", "all_reduce_sum", "barrier"]


@dataclass
class Context:
    """Where this process stands: ``rank`` of ``world_size``, its device, and whether it joined a group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: Any = "cpu"
    initialised_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0):
    """``"auto"`` -> cuda when available else cpu; ``"cuda"`` without a GPU is an error.

    Examples
    --------
    >>> str(resolve_device("cpu"))
    'cpu'
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise KernelscopeError(f"device {name!r} asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
        if name == "cuda":
            name = f"cuda:{local_rank % torch.cuda.device_count()}"
    elif name != "cpu":
        raise KernelscopeError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def setup(device: str = "auto") -> Context:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a 1-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size <= 1:
        return Context(device=torch_device)
    import torch
    import torch.distributed as dist

    initialised_here = False
    if not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend=backend)
        initialised_here = True
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device,
                   initialised_here=initialised_here)


def teardown(context: Context) -> None:
    """Leave the process group if :func:`setup` joined it."""
    if context.initialised_here:
        import torch.distributed as dist

        dist.destroy_process_group()


def all_reduce_sum(context: Context, values: list[float]) -> list[float]:
    """Sum ``values`` over all ranks (identity in one process)."""
    if not context.distributed:
        return values
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier(context: Context) -> None:
    """Wait for every rank (no-op in one process)."""
    if context.distributed:
        import torch.distributed as dist

        dist.barrier()
