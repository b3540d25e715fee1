"""Learning-rate schedules: linear warmup, then constant, inverse square root, decay on a dev plateau, or
cosine decay over the run's budget (steps, epochs or minutes, whichever ends it first)."""

from __future__ import annotations

import math
from typing import Any

from rnnmt.training.config import TrainConfig


class LearningRate:
    """Sets the optimizer's rate each step; ``plateau`` also reacts to dev BLEU after each validation."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.plateau_scale = 1.0
        self.best_bleu = -math.inf
        self.bad_validations = 0  # since the best or the last decay
        self.stale = 0  # validations since the best: what early stopping counts

    def rate(self, step: int, done: float = 0.0) -> float:
        """The rate for ``step``; ``done`` is the share of the run's budget spent (``cosine`` uses it)."""
        c = self.config
        warmup = min(1.0, step / c.warmup_steps) if c.warmup_steps else 1.0
        if c.scheduler == "cosine":
            cosine = 0.5 * (1 + math.cos(math.pi * min(max(done, 0.0), 1.0)))
            return warmup * (c.min_learning_rate + (c.learning_rate - c.min_learning_rate) * cosine)
        if c.scheduler == "inverse_sqrt":
            return c.learning_rate * warmup * math.sqrt(max(c.warmup_steps, 1) / max(step, c.warmup_steps, 1))
        return max(c.min_learning_rate, c.learning_rate * warmup * self.plateau_scale)

    def validated(self, bleu: float) -> None:
        """Record a dev score; after ``patience`` validations without improvement, decay the rate."""
        if bleu > self.best_bleu:
            self.best_bleu, self.bad_validations, self.stale = bleu, 0, 0
            return
        self.bad_validations += 1
        self.stale += 1
        if self.config.scheduler == "plateau" and self.bad_validations >= self.config.patience:
            self.plateau_scale *= self.config.decrease_factor
            self.bad_validations = 0

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self), config=None)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update({k: v for k, v in state.items() if k != "config"})
