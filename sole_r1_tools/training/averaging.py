"""Weight averaging during a training stage: an exponential moving average of the weights (Polyak).

From step ``start`` on, after every optimisation step, each floating-point parameter's average moves
towards the live value by ``1 - decay``: with decay 0.99 the saved weights are an average over
roughly the last 100 steps instead of the last step's alone, which damps the step-to-step swings
of a small model trained with a large learning rate. Training itself is unchanged (the optimiser
only ever sees the live weights), so a stage run with and without averaging follows the same
trajectory and the two saved models differ only by the averaging.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class WeightAverage:
    """Keeps the moving average of a model's floating-point parameters beside the live ones."""

    def __init__(self, decay: float, start: int = 0) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight-average decay must be in (0, 1), got {decay}")
        if start < 0:
            raise ValueError(f"weight-average start must be >= 0, got {start}")
        self.decay, self.start = decay, start
        self._average: dict[str, Any] | None = None
        self.updates = 0

    @property
    def active(self) -> bool:
        """Whether an average exists yet (the first update at or after ``start`` begins it)."""
        return self._average is not None

    def update(self, model: Any, steps_done: int) -> None:
        """Fold the live weights after ``steps_done`` optimisation steps into the average."""
        import torch

        if steps_done < self.start:
            return
        with torch.no_grad():
            if self._average is None:  # begins as a copy: no zero-initialised bias to correct
                self._average = {n: p.detach().clone() for n, p in model.named_parameters()
                                 if p.is_floating_point()}
            else:
                for n, p in model.named_parameters():
                    if n in self._average:
                        self._average[n].lerp_(p.detach(), 1.0 - self.decay)
        self.updates += 1

    def copy_to(self, model: Any) -> None:
        """Replace the model's parameters by the average (the live weights are lost)."""
        if self._average is None:
            raise RuntimeError(f"no average yet: it starts after step {self.start}")
        _copy_into(model, self._average)

    @contextlib.contextmanager
    def applied(self, model: Any) -> Iterator[None]:
        """The average in the model for the ``with`` block, the live weights back afterwards
        (scoring the averaged model mid-stage without disturbing training)."""
        live = {n: p.detach().clone() for n, p in model.named_parameters() if n in (self._average or {})}
        self.copy_to(model)
        try:
            yield
        finally:
            _copy_into(model, live)

    def summary(self) -> dict[str, Any]:
        """What the stage's ``training_summary.json`` records under ``weight_average``."""
        return {"decay": self.decay, "start": self.start, "updates": self.updates}


def _copy_into(model: Any, tensors: dict[str, Any]) -> None:
    """Copy ``tensors`` (parameter name -> tensor) into the model's parameters of those names."""
    import torch

    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in tensors:
                p.copy_(tensors[n])
