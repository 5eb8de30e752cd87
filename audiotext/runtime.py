"""Where code runs and how it is seeded: the two things every command sets before anything else,
and, under torchrun, which of the job's processes this one is.

Several processes train with PyTorch's own DistributedDataParallel on torch.distributed (gloo on
CPU, NCCL on GPU), not Hugging Face Accelerate: the engine already owns the loop, the device,
mixed precision and checkpoints, so Accelerate would only wrap the dozen torch.distributed calls
below and add a dependency and a second notion of where a model lives.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from audiotext.errors import ProcessLost, SettingError

T = TypeVar("T")

# How long a process waits for the others at a meeting point. Long: one process may build the
# feature cache while the others wait. A process that dies is noticed at once regardless (its
# connections close, and torchrun stops the job), so this bounds only a live process that hangs.
MEETING_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: rank among world_size processes."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The process that writes files and prints progress."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1


def processes() -> Processes:
    """This process's place; one process of one unless `join_processes` joined a torchrun job."""
    if not (dist.is_available() and dist.is_initialized()):
        return Processes()
    return Processes(dist.get_rank(), dist.get_world_size())


def launcher_setting(name: str, default: int) -> int:
    """The integer a launcher put in environment variable `name` (torchrun's WORLD_SIZE, LOCAL_RANK),
    or `default` when it is not set."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingError(f"environment variable {name}={value!r} must be an integer (torchrun sets it)") from None


def join_processes(no_cuda: bool = False) -> Processes:
    """Joins the job torchrun started (its WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and
    MASTER_PORT variables), once; without them this is the only process."""
    if launcher_setting("WORLD_SIZE", 1) > 1 and not dist.is_initialized():
        cuda = torch.cuda.is_available() and not no_cuda
        if cuda:
            torch.cuda.set_device(launcher_setting("LOCAL_RANK", 0))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=MEETING_TIMEOUT)
    return processes()


def leave_processes() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def select_device(no_cuda: bool = False) -> torch.device:
    """The GPU of this process (LOCAL_RANK's under torchrun) when there is one, else the CPU."""
    if torch.cuda.is_available() and not no_cuda:
        return torch.device("cuda", launcher_setting("LOCAL_RANK", 0))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def wait_for_all() -> None:
    if processes().several:
        try:
            dist.barrier()
        except RuntimeError as err:  # the other process stopped (an error it reported, Ctrl-C, a kill)
            if not is_lost_process(err):
                raise
            raise process_lost(err, "it stopped before training") from None


def is_lost_process(err: RuntimeError) -> bool:
    """Whether torch.distributed failed because a peer went away (gloo and NCCL raise RuntimeErrors
    that say so in words, not types)."""
    text = str(err)
    return isinstance(err, dist.DistError) or any(
        mark in text for mark in ("Connection closed by peer", "Connection reset", "NCCL", "gloo", "Broken pipe")
    )


def process_lost(err: RuntimeError, saved: str) -> ProcessLost:
    """The one-line error of a process whose peer went away (instead of gloo's traceback); `saved`
    says what there is to resume from."""
    share = processes()
    # "Read error [127.0.0.1]:55998: Connection reset by peer" of gloo's
    # "[.../pair.cc:537] Read error [127.0.0.1]:55998: Connection reset by peer. This is typically ...".
    cause = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip().splitlines()[0]).split(". ")[0]
    return ProcessLost(f"process {share.rank} of {share.world_size}: another process of this job stopped ({cause}); {saved}")


# Objects below pass between this job's own processes (torch.distributed pickles them on the way),
# never from a file.


def as_on_main(value: T) -> T:
    """The main process's `value`, in every process: so that all act on the same figures."""
    if not processes().several:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(make: Callable[[], T]) -> T:
    """`make()` run by the main process only, its result (or its error) handed to every process,
    so that all go on with the same folder, figures or error."""
    share = processes()
    if not share.several:
        return make()
    outcome = None
    if share.is_main:
        try:
            outcome = (make(), None)
        except Exception as err:  # handed on and raised in every process, the main one included
            outcome = (None, err)
    result, error = as_on_main(outcome)
    if error is not None:
        if not share.is_main:
            error.replicated = True  # the main process reports it; the others only stop
        raise error
    return result


def everyones(value: T) -> list[T]:
    """`value` of every process, in rank order ([value] alone)."""
    share = processes()
    if not share.several:
        return [value]
    everyone: list[T] = [value] * share.world_size
    dist.all_gather_object(everyone, value)
    return everyone


def gathered_in_order(mine: Sequence[T]) -> list[T]:
    """The items of every process in one list, when process r holds items r, r + W, r + 2W, ...
    of it (W processes): how work dealt out in turns is put back together."""
    share = processes()
    if not share.several:
        return list(mine)
    everyone: list[list[T]] = [[] for _ in range(share.world_size)]
    dist.all_gather_object(everyone, list(mine))
    total = sum(len(items) for items in everyone)
    return [everyone[i % share.world_size][i // share.world_size] for i in range(total)]


def summed(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over every process (a copy; the same tensor's values with one process)."""
    values = values.clone()
    if processes().several:
        dist.all_reduce(values)
    return values
