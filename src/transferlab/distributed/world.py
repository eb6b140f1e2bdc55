"""Where this process stands in a process group (works without one: a single process is rank 0 of 1)."""


def world_size() -> int:
    """Processes in the initialized process group (1 without one)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_global_zero() -> bool:
    """Rank 0 of a process group (or a single process): the one that writes shared files."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
