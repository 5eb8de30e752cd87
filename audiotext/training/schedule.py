"""Learning-rate schedules, both stepped by the engine after every optimizer step and every epoch.

- `WarmupThenPlateau`: linear warm-up per optimizer step, then ReduceLROnPlateau on the dev loss
  (the classifiers). The reference meant this but stepped its warm-up once per epoch.
- `WarmupThenLinearDecay`: linear warm-up, then linear decay to zero at the last step (BERT's
  schedule: text fine-tuning and masked-LM pre-training).
"""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup


class WarmupThenPlateau:
    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, patience: int, factor: float = 0.1):
        self.optimizer = optimizer
        self.warmup_steps = warmup_steps
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.steps = 0
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)
        self._set_warmup_lr()

    @property
    def warming_up(self) -> bool:
        return self.steps < self.warmup_steps

    def _set_warmup_lr(self) -> None:
        scale = min(1.0, (self.steps + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    def step_batch(self) -> None:
        if self.warming_up:
            self.steps += 1
            self._set_warmup_lr()

    def step_epoch(self, dev_loss: float | None) -> None:
        # Plateau counting starts once warm-up is over, so a slow start cannot decay the rate.
        if not self.warming_up and dev_loss is not None:
            self.plateau.step(dev_loss)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.plateau.load_state_dict(state["plateau"])


class WarmupThenLinearDecay:
    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
        self.inner = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)

    def step_batch(self) -> None:
        self.inner.step()

    def step_epoch(self, dev_loss: float | None) -> None:
        pass

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)
