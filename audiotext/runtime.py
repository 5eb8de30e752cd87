"""Where code runs and how it is seeded: the two things every command sets before anything else."""

from __future__ import annotations

import random

import numpy as np
import torch


def select_device(no_cuda: bool = False) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
