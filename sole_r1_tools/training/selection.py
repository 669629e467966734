"""Model selection during a training stage: the weights that score best free-running on validation episodes.

Every ``every`` steps from step ``start`` on (and after the last step), the model scores a fixed
set of validation episodes the way the node runs it (``evaluate``: production scorer, greedy, its
own answers fed back), and the weights with the smallest :func:`~sole_r1_tools.training.metrics.target_shortfall`
(ties: smaller MAE, then the later step) are kept. The stage saves those. The validation episodes'
seeds (``SELECTION_SEED`` on) are used by no training stage and by none of the held-out sets the
model card reports (``dataset.HELD_OUT_SETS``, refused), so the held-out metrics of the chosen
model stay unbiased.
"""

from __future__ import annotations

from typing import Any

from sole_r1_tools.training.dataset import check_not_held_out, evaluation_specs, make_episode

SELECTION_SEED = 900_000


class CheckpointSelector:
    """Scores the model at its candidate steps and keeps the best weights in memory."""

    def __init__(self, episodes: int, every: int, start: int = 0, *, seed: int = SELECTION_SEED) -> None:
        if episodes < 1 or every < 1:
            raise ValueError(f"selection needs episodes >= 1 and every >= 1, got {episodes} and {every}")
        self.every, self.start, self.seed = every, start, seed
        self.specs = evaluation_specs(episodes, seed)
        check_not_held_out((s.seed for s in self.specs), "selection")
        self.rendered = [make_episode(s) for s in self.specs]
        self._records: dict[int, dict[str, Any]] = {}  # step -> candidate record, in scoring order
        self._best_key: tuple[float, float, int] | None = None
        self._best_state: dict[str, Any] | None = None
        self.chosen_step: int | None = None

    def due(self, steps_done: int) -> bool:
        """Whether the model after ``steps_done`` optimisation steps is a candidate (the last step is
        always one: :meth:`consider` it after the loop)."""
        return steps_done >= self.start and steps_done % self.every == 0

    def scored(self, steps_done: int) -> bool:
        """Whether the model after ``steps_done`` steps has been scored already."""
        return steps_done in self._records

    @property
    def candidates(self) -> list[dict[str, Any]]:
        """Every scored candidate's record, in the order they were scored."""
        return list(self._records.values())

    def consider(self, backend: Any, steps_done: int) -> dict[str, Any]:
        """Score ``backend``'s model as it is now; keep its weights if they are the best so far.
        Returns the candidate's record (step, headline metrics, shortfall)."""
        from sole_r1_tools.training.evaluate import evaluate
        from sole_r1_tools.training.metrics import TARGETS, target_shortfall

        if steps_done in self._records:
            return self._records[steps_done]
        model = backend.model
        was_training = model.training
        model.eval()
        try:
            result = evaluate(backend, specs=self.specs, rendered=self.rendered)
        finally:
            model.train(was_training)
        shortfall = target_shortfall(result)
        record = {"step": steps_done, **{k: round(float(result[k]), 4) for k in TARGETS},
                  "shortfall": round(shortfall, 4)}
        self._records[steps_done] = record
        key = (shortfall, float(result["mae"]), -steps_done)
        if self._best_key is None or key < self._best_key:
            self._best_key = key
            self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.chosen_step = steps_done
        return record

    def restore_best(self, model: Any) -> int:
        """Load the best candidate's weights into ``model``; returns its step."""
        if self._best_state is None or self.chosen_step is None:
            raise RuntimeError("no candidate was scored")
        model.load_state_dict(self._best_state)
        return self.chosen_step

    def summary(self) -> dict[str, Any]:
        """What the stage's ``training_summary.json`` records under ``selection``."""
        return {"episodes": len(self.specs), "seed": self.seed, "every": self.every, "start": self.start,
                "criterion": "target_shortfall, then mae", "chosen_step": self.chosen_step,
                "candidates": self.candidates}
