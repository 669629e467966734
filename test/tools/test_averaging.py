"""Weight averaging during a training stage: the saved weights are the moving average of the live ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from sole_r1_tools.training.averaging import WeightAverage
from sole_r1_tools.training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_average_is_the_exponential_moving_average_from_its_start_step() -> None:
    import torch

    model = torch.nn.Linear(3, 2)
    average = WeightAverage(decay=0.75, start=2)
    history = []
    for steps_done in range(1, 5):
        with torch.no_grad():
            model.weight.fill_(float(steps_done))
        history.append(model.weight.detach().clone())
        average.update(model, steps_done)
    # steps 1 is before the start; 2 begins the average; 3 and 4 are folded in with weight 0.25
    expected = (history[1] * 0.75 + history[2] * 0.25) * 0.75 + history[3] * 0.25
    assert average.updates == 3
    with average.applied(model):
        assert torch.allclose(model.weight, expected)
    assert torch.equal(model.weight, history[3])  # the live weights are back after the block
    average.copy_to(model)
    assert torch.allclose(model.weight, expected)
    assert average.summary() == {"decay": 0.75, "start": 2, "updates": 3}


def test_average_refuses_bad_settings_and_copying_before_it_starts() -> None:
    import torch

    with pytest.raises(ValueError, match="decay"):
        WeightAverage(decay=1.0)
    with pytest.raises(ValueError, match="start"):
        WeightAverage(decay=0.9, start=-1)
    average = WeightAverage(decay=0.9, start=5)
    average.update(torch.nn.Linear(2, 2), 4)
    assert not average.active
    with pytest.raises(RuntimeError, match="after step 5"):
        average.copy_to(torch.nn.Linear(2, 2))


def test_train_saves_the_average_of_the_same_trajectory(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Averaging does not change training: with the average over the last two steps at decay d the
    saved weights are d * w2 + (1 - d) * w3, so their offset from the unaveraged run's w3 scales with d."""
    from safetensors.torch import load_file

    common = dict(steps=3, episodes=1, batch_size=2, warmup=1, workers=1, val_episodes=1,
                  init_dir=tiny_model_dir, threads=1, checkpoint_every=0, lr=0.02)
    train(tmp_path / "last", **common)
    half = train(tmp_path / "half", weight_average=0.5, weight_average_from=2, **common)
    train(tmp_path / "quarter", weight_average=0.25, weight_average_from=2, **common)
    assert half["weight_average"] == {"decay": 0.5, "start": 2, "updates": 2}
    last, w_half, w_quarter = (load_file(str(tmp_path / name / "model.safetensors"))
                               for name in ("last", "half", "quarter"))
    moved = [k for k in last if not last[k].equal(w_half[k])]
    assert moved, "the average over two different steps should differ from the last step's weights"
    for k in last:
        assert (w_quarter[k] - last[k]).allclose(0.5 * (w_half[k] - last[k]), atol=1e-6), k


def test_train_refuses_a_bad_decay_before_building_any_data(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="decay"):
        train(tmp_path / "m", steps=1, episodes=1, workers=1, weight_average=1.5)
    assert not (tmp_path / "m").exists()
