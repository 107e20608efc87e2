"""Data-parallel training on one machine's cores: one single-threaded process per core.

The demo model's matrices are small, so a second intra-op thread buys little (an update on 20 s
of audio: 0.17 s with two threads, 0.22 s with one); two processes, each on its own share of the
utterances, average their gradients once per update and so train on about 1.5 times the audio per
minute. Gloo over loopback; with one worker nothing here communicates.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

from parakeet_serve.lifeline import end_with_parent


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Every worker starts from worker 0's weights."""
    if world() > 1:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients over workers in one message (parameters this loss left unused stay None)."""
    if world() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def furthest(progress: float) -> float:
    """The largest of the workers' progress, so all stop (and switch loss) at the same update."""
    if world() == 1:
        return progress
    value = torch.tensor([progress], dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value)


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def launch(fn: Callable[..., None], workers: int, *args: Any) -> None:
    """Run fn(*args) in `workers` single-threaded processes joined in one process group."""
    if workers == 1:
        fn(*args)
        return
    with socket.socket() as s:  # a free loopback port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(workers, port, os.getpid(), fn, args), nprocs=workers, join=True)


def _worker(index: int, workers: int, port: int, parent: int, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    end_with_parent(parent)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=index, world_size=workers)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def gather(value: Any) -> list[Any]:
    """Every worker's `value`, in rank order."""
    if world() == 1:
        return [value]
    values: list[Any] = [None] * world()
    dist.all_gather_object(values, value)
    return values
