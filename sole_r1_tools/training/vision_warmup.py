"""Vision warm-up: teach the vision tower to see task state before the protocol SFT (CPU).

    python -m sole_r1_tools.training.vision_warmup --out /tmp/warm --seed 0 --minutes 8

A tiny random-init VLM trained only on the protocol's long prompts learns the text prior
(goal + quoted previous progress) and ignores the image (docs/default_model.md). This stage is
the miniature of a pretrained vision encoder: the model's own Qwen3-VL vision tower (patch
embedding, blocks, merger and DeepStack mergers) is trained on the production composites
(``compose`` + the model's image processor, exactly as the scorer sends them) to predict the
scene's true state through a small goal-conditioned attention-pooling head: current and
previous progress, how far the target still is from its goal, what the gripper holds and
whether the target moved; and, per image token, which objects (by colour), the gripper and the
goal zone it shows (``token_labels``: dense supervision, 150 labels per composite instead of six
numbers). The pooled head mimics what the language model has to do (attend to image
tokens with a goal-dependent query) and is thrown away; only the vision weights are saved, in
the same model directory format as the input (``--init``, or a fresh random model).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sole_r1_ros.core.composite import CompositeLayout
from sole_r1_tools.synth.episodes import TASK_KINDS
from sole_r1_tools.synth.scene import COLORS, SceneRenderer
from sole_r1_tools.training.dataset import (
    EpisodeSpec,
    ExampleBuilder,
    _target_distance,
    make_episode,
    parse_weights,
    percent_at,
    step_pairs,
    training_specs,
)
from sole_r1_tools.training.train import _WORKER, _log, map_episodes

COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
#: Per-image-token label channels: an object of each colour, the gripper, the goal zone.
TOKEN_CHANNELS: tuple[str, ...] = (*COLOR_NAMES, "gripper", "zone")
TARGETS: tuple[str, ...] = ("progress", "prev_progress", "remaining", "holds_target", "holds_other",
                            "target_moved")
_BINARY = slice(3, 6)


@dataclass
class VisionExample:
    """One composite (uint8 patches) with its goal condition and state targets."""

    patches: np.ndarray  # uint8 [n_patches, C*P*P]
    grid_thw: np.ndarray  # int64 [3]
    goal: np.ndarray  # int64 [3]: task kind, target colour, reference colour
    targets: np.ndarray  # float32 [len(TARGETS)]
    token_labels: np.ndarray  # uint8 [n_image_tokens, len(TOKEN_CHANNELS)]


def state_targets(ep: Any, prev_idx: int, cur_idx: int) -> np.ndarray:
    """The regression/classification targets of one step, from the scene's true state."""
    meta = ep.meta
    t = meta["task"].target
    held = int(meta["holding"][cur_idx])
    moved = float(np.abs(meta["poses"][cur_idx][t, :3] - meta["poses"][prev_idx][t, :3]).max() > 0.004)
    remaining = min(_target_distance(ep, cur_idx) / max(_target_distance(ep, 0), 1e-6), 1.5) / 1.5
    return np.array([percent_at(ep, cur_idx) / 100.0, percent_at(ep, prev_idx) / 100.0, remaining,
                     float(held == t), float(held >= 0 and held != t), moved], dtype=np.float32)


def token_labels(ep: Any, frame_indices: tuple[int, ...], token_grid: tuple[int, int],
                 layout: CompositeLayout = CompositeLayout(), renderer: SceneRenderer | None = None) -> np.ndarray:
    """What each image token of the composite shows, from the true state: for every column
    (``frame_indices``) and camera row, the projected bounding boxes of the objects (one channel
    per colour), the gripper's fingertip point and the goal zone, mapped through the composite's
    letterbox and grid geometry onto the model's merged-token grid (``token_grid`` = rows, cols,
    raster order like the vision tower's output). Camera jitter is ignored (a few pixels against
    tokens of ~65 view pixels). Pass the episode's ``renderer`` when calling this per step (building
    one renders the table texture)."""
    meta = ep.meta
    scene = meta["scene"]
    width, height = meta["size"]
    rows, cols = token_grid
    renderer = renderer or SceneRenderer(scene, (width, height))
    tile, gap = layout.tile_size, layout.gap
    k = tile / max(width, height)
    new_w, new_h = max(1, int(width * k)), max(1, int(height * k))
    off_x, off_y = (tile - new_w) // 2, (tile - new_h) // 2
    grid_w = len(frame_indices) * tile + (len(frame_indices) - 1) * gap
    grid_h = len(ep.roles) * tile + (len(ep.roles) - 1) * gap
    out = np.zeros((rows, cols, len(TOKEN_CHANNELS)), dtype=np.uint8)

    def mark(channel: int, col: int, row: int, pts: np.ndarray) -> None:
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        if x1 < 0 or y1 < 0 or x0 >= width or y0 >= height:
            return  # outside the view
        x0, x1 = np.clip([x0, x1], 0, width)
        y0, y1 = np.clip([y0, y1], 0, height)
        gx = col * (tile + gap) + off_x + np.array([x0, x1]) * new_w / width
        gy = row * (tile + gap) + off_y + np.array([y0, y1]) * new_h / height
        c0, c1 = (np.clip(gx / grid_w * cols, 0, cols - 1e-6)).astype(int)
        r0, r1 = (np.clip(gy / grid_h * rows, 0, rows - 1e-6)).astype(int)
        out[r0:r1 + 1, c0:c1 + 1, channel] = 1

    for col, i in enumerate(frame_indices):
        grip, poses = meta["gripper"][i], meta["poses"][i]
        for row, role in enumerate(ep.roles):
            cam = renderer.external_camera() if role == "external" else renderer.wrist_camera(grip)
            if scene.zone is not None:
                mark(len(COLOR_NAMES) + 1, col, row, cam.project(scene.zone.corners(), 0.0))
            for obj, (x, y, z, yaw) in zip(scene.objects, poses):
                top = z + obj.height
                if cam.elevation - top >= 0.02:  # the renderer skips objects at the lens
                    mark(COLOR_NAMES.index(obj.color), col, row, cam.project(obj.footprint(x, y, yaw), top))
            tip = cam.project(np.asarray(grip[:2], dtype=np.float64)[None], float(grip[2]))
            mark(len(COLOR_NAMES), col, row, tip)
    return out.reshape(rows * cols, len(TOKEN_CHANNELS))


def goal_ids(ep: Any) -> np.ndarray:
    meta = ep.meta
    return np.array([TASK_KINDS.index(meta["task_kind"]), COLOR_NAMES.index(meta["target"]),
                     COLOR_NAMES.index(meta["reference"])], dtype=np.int64)


def _episode_job(job: tuple[EpisodeSpec, int, int]) -> list[VisionExample]:
    spec, seed, passes = job
    builder: ExampleBuilder = _WORKER["builder"]  # set by train.map_episodes' worker set-up
    ep = make_episode(spec)
    rng = np.random.default_rng([seed, spec.seed, 13])
    goal = goal_ids(ep)
    renderer = SceneRenderer(ep.meta["scene"], ep.meta["size"])  # cameras for the token labels
    out = []
    for _ in range(passes):
        for prev_idx, cur_idx in step_pairs(ep.n_frames, rng, (3.0, 12.0)):
            _, image = builder.prompt_and_image(ep, prev_idx, cur_idx, 0)
            inputs = builder.processor.image_processor(images=[image], return_tensors="np")
            grid = np.asarray(inputs["image_grid_thw"][0], dtype=np.int64)
            merge = int(builder.processor.image_processor.merge_size)
            labels = token_labels(ep, (0, prev_idx, cur_idx), (int(grid[1]) // merge, int(grid[2]) // merge),
                                  builder.protocol.layout, renderer)
            out.append(VisionExample(builder.to_patches(np.asarray(inputs["pixel_values"])), grid, goal,
                                     state_targets(ep, prev_idx, cur_idx), labels))
    return out


def build_vision_examples(model_dir: Path, specs: list[EpisodeSpec], seed: int, passes: int,
                          workers: int) -> list[VisionExample]:
    return map_episodes(_episode_job, [(s, seed, passes) for s in specs], model_dir, workers,
                        what="composites", log_every=100)


def make_head(token_dim: int, n_queries: int = 4, dim: int = 64) -> Any:
    """Goal-conditioned attention pooling over image tokens, then an MLP to the targets; and a
    per-token linear probe (``dense``) for the token labels."""
    import torch
    from torch import nn

    class StateHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kind = nn.Embedding(len(TASK_KINDS), n_queries * dim)
            self.target = nn.Embedding(len(COLOR_NAMES), n_queries * dim)
            self.reference = nn.Embedding(len(COLOR_NAMES), n_queries * dim)
            self.norm = nn.LayerNorm(token_dim)
            self.key = nn.Linear(token_dim, dim)
            self.value = nn.Linear(token_dim, dim)
            self.mlp = nn.Sequential(nn.Linear(n_queries * dim + 3 * dim, 128), nn.GELU(), nn.Linear(128, len(TARGETS)))
            self.dense = nn.Linear(token_dim, len(TOKEN_CHANNELS))  # per-token: which objects are here

        def forward(self, tokens: list[torch.Tensor], goal: torch.Tensor) -> torch.Tensor:
            q = (self.kind(goal[:, 0]) + self.target(goal[:, 1]) + self.reference(goal[:, 2])).view(
                len(tokens), n_queries, dim
            )
            pooled = []
            for i, tok in enumerate(tokens):
                x = self.norm(tok)
                att = torch.softmax(q[i] @ self.key(x).T / dim ** 0.5, dim=-1)  # [Q, N]
                pooled.append((att @ self.value(x)).reshape(-1))
            g = q[:, :3].reshape(len(tokens), -1)
            return self.mlp(torch.cat([torch.stack(pooled), g], dim=-1))

    return StateHead()


def image_tokens(visual: Any, builder: ExampleBuilder, batch: list[VisionExample]) -> list[Any]:
    """Per-image token features: the merger output concatenated with the DeepStack outputs."""
    import torch

    device = next(visual.parameters()).device
    pixel = builder.pixel_tensor([e.patches for e in batch], device)
    grid = torch.from_numpy(np.stack([e.grid_thw for e in batch]))
    out = visual(pixel, grid_thw=grid.to(device), return_dict=True)
    feats = torch.cat([out.pooler_output, *out.deepstack_features], dim=-1)
    merge = visual.spatial_merge_size ** 2
    sizes = [int(np.prod(e.grid_thw)) // merge for e in batch]
    return list(torch.split(feats, sizes))


def state_loss(pred: Any, target: Any) -> Any:
    import torch.nn.functional as F

    reg = F.smooth_l1_loss(pred[:, :3], target[:, :3], beta=0.1)
    cls = F.binary_cross_entropy_with_logits(pred[:, _BINARY], target[:, _BINARY])
    return 4.0 * reg + cls


def _labels(batch: list[VisionExample]) -> Any:
    import torch

    return torch.from_numpy(np.concatenate([e.token_labels for e in batch]).astype(np.float32))


def _stacked(batch: list[VisionExample], field: str, like: Any) -> Any:
    """``field`` of every example stacked into one tensor on ``like``'s device."""
    import torch

    return torch.from_numpy(np.stack([getattr(e, field) for e in batch])).to(like.device)


def warmup_loss(head: Any, tokens: list[Any], batch: list[VisionExample], dense_weight: float,
                gripper_pos_weight: float = 1.0) -> Any:
    """State loss through the pooled head, plus ``dense_weight`` x the per-token label loss (the
    gripper's positive tokens weighted ``gripper_pos_weight``: it marks one token per view)."""
    import torch
    import torch.nn.functional as F

    loss = state_loss(head(tokens, _stacked(batch, "goal", tokens[0])), _stacked(batch, "targets", tokens[0]))
    if dense_weight > 0:
        pos_weight = torch.ones(len(TOKEN_CHANNELS), device=tokens[0].device)
        pos_weight[TOKEN_CHANNELS.index("gripper")] = gripper_pos_weight
        loss = loss + dense_weight * F.binary_cross_entropy_with_logits(
            head.dense(torch.cat(tokens)), _labels(batch).to(tokens[0].device), pos_weight=pos_weight)
    return loss


def evaluate_head(visual: Any, head: Any, builder: ExampleBuilder, val: list[VisionExample], batch: int = 32
                  ) -> dict[str, float]:
    """Mean absolute error of each regression target and accuracy of each binary one."""
    import torch

    visual.eval()
    head.eval()
    preds, targets, dense, labels = [], [], [], []
    with torch.no_grad():
        for k in range(0, len(val), batch):
            chunk = val[k:k + batch]
            tokens = image_tokens(visual, builder, chunk)
            preds.append(head(tokens, _stacked(chunk, "goal", tokens[0])).cpu())
            targets.append(torch.from_numpy(np.stack([e.targets for e in chunk])))
            dense.append((head.dense(torch.cat(tokens)) > 0).cpu())
            labels.append(_labels(chunk) > 0.5)
    visual.train()
    head.train()
    p, t = torch.cat(preds), torch.cat(targets)
    out = {f"mae_{n}": float((p[:, i] - t[:, i]).abs().mean()) for i, n in enumerate(TARGETS[:3])}
    out.update({f"acc_{n}": float(((p[:, i] > 0).float() == t[:, i]).float().mean())
                for i, n in enumerate(TARGETS[3:], start=3)})
    out["mae_progress_if_constant"] = float((t[:, 0] - t[:, 0].mean()).abs().mean())
    d, lab = torch.cat(dense), torch.cat(labels)
    g = TOKEN_CHANNELS.index("gripper")
    out["token_label_f1"] = _f1(d, lab)
    out["token_f1_gripper"] = _f1(d[:, g], lab[:, g])
    return out


def _f1(pred: Any, label: Any) -> float:
    """F1 of boolean predictions against boolean labels (0 when both are empty)."""
    return 2 * float((pred & label).sum()) / max(float(pred.sum()) + float(label.sum()), 1.0)


def warmup(out: Path, *, init_dir: Path | None = None, seed: int = 0, episodes: int = 360, passes: int = 3,
           minutes: float = 8.0, steps: int = 4000, batch_size: int = 32, lr: float = 2e-3,
           threads: int = 2, workers: int = 2, val_episodes: int = 24, log_every: int = 50,
           cache: Path | None = None, dense_weight: float = 1.0, stop_after: int = 0, device: str = "cpu",
           data_only: bool = False, gripper_pos_weight: float = 1.0, kind_weights: dict[str, float] | None = None,
           max_image_tokens: int | None = None) -> dict[str, Any]:
    """Train the vision tower of ``init_dir`` (or a fresh default-architecture model, with
    ``max_image_tokens`` if given) and save it to ``out``. ``kind_weights``: task kinds drawn by
    these weights (training and held-out composites alike) instead of round-robin."""
    import torch

    from sole_r1_ros.core.protocol import load_protocol
    from sole_r1_tools.training.loading import load_model
    from sole_r1_tools.training.train import (
        ARCH,
        _lr_at,
        build_initial_model,
        image_token_budget,
        save_model,
    )

    t_start = time.perf_counter()
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    tmp = Path(tempfile.mkdtemp(prefix="sole_r1_warmup_"))
    try:
        if init_dir and max_image_tokens:
            raise ValueError("max_image_tokens sets a fresh model's image budget; an --init model keeps its own")
        arch = dict(ARCH, max_image_tokens=max_image_tokens or ARCH["max_image_tokens"])
        model_dir = init_dir or build_initial_model(tmp / "init", seed, arch)
        train_specs = [EpisodeSpec(s.task_kind, s.outcome, s.seed + 500_000)
                       for s in training_specs(episodes, seed, kind_weights=kind_weights)]
        val_specs = [EpisodeSpec(s.task_kind, s.outcome, s.seed + 700_000)
                     for s in training_specs(val_episodes, seed + 1, kind_weights=kind_weights)]
        if cache and Path(cache).is_file():
            with open(cache, "rb") as f:
                examples, val = pickle.load(f)
            _log(f"loaded {len(examples)} + {len(val)} composites from {cache}")
        else:
            examples = build_vision_examples(model_dir, train_specs, seed, passes, workers)
            val = build_vision_examples(model_dir, val_specs, seed + 1, 1, workers)
            if cache:
                with open(cache, "wb") as f:
                    pickle.dump((examples, val), f, protocol=pickle.HIGHEST_PROTOCOL)
        if data_only:
            return {"train_composites": len(examples), "val_composites": len(val)}
        data_s = time.perf_counter() - t_start
        _log(f"vision data ready: {len(examples)} train / {len(val)} val composites in {data_s:.0f} s")

        torch.set_num_threads(threads)
        backend = load_model(model_dir, device)
        builder = ExampleBuilder(backend, load_protocol())
        visual = backend.model.model.visual
        visual.train()
        with torch.no_grad():
            dim = image_tokens(visual, builder, examples[:1])[0].shape[-1]
        head = make_head(dim).to(backend.model.device)
        params = list(visual.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
        before = evaluate_head(visual, head, builder, val)
        _log(f"before: {json.dumps(before)}")
        order_rng = np.random.default_rng([seed, 5])
        order: list[int] = []
        log: list[dict[str, Any]] = []
        t_train = time.perf_counter()
        deadline = t_train + minutes * 60.0
        step, ema, stopped_early = 0, None, False
        for step in range(min(steps, stop_after) if stop_after > 0 else steps):
            if time.perf_counter() > deadline:
                _log(f"time budget of {minutes} min reached at step {step}")
                stopped_early = True
                break
            if len(order) < batch_size:
                order.extend(order_rng.permutation(len(examples)).tolist())
            idx, order = order[:batch_size], order[batch_size:]
            chunk = [examples[i] for i in idx]
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, lr, 100)
            loss = warmup_loss(head, image_tokens(visual, builder, chunk), chunk, dense_weight, gripper_pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            value = loss.item()
            ema = value if ema is None else 0.95 * ema + 0.05 * value
            if step % log_every == 0:
                entry = {"step": step, "loss_ema": round(ema, 4), "elapsed_s": round(time.perf_counter() - t_train, 1)}
                if step % (log_every * 4) == 0:
                    entry.update({k: round(v, 4) for k, v in evaluate_head(visual, head, builder, val).items()})
                log.append(entry)
                _log(json.dumps(entry))
        after = evaluate_head(visual, head, builder, val)
        _log(f"after: {json.dumps(after)}")
        summary = {
            "stage": "vision_warmup", "seed": seed, "init": "previous_stage" if init_dir else "random",
            "episodes": episodes, "passes": passes, "train_composites": len(examples), "val_composites": len(val),
            "steps": step + (0 if stopped_early else 1), "planned_steps": steps, "stopped_early": stopped_early,
            "batch_size": batch_size, "lr": lr, "dense_weight": dense_weight,
            "gripper_pos_weight": gripper_pos_weight, "kind_weights": kind_weights or None,
            "max_image_tokens": image_token_budget(backend),
            "data_seconds": round(data_s, 1),
            "train_seconds": round(time.perf_counter() - t_train, 1), "torch_threads": torch.get_num_threads(),
            "device": str(backend.model.device),
            "val_before": {k: round(v, 4) for k, v in before.items()},
            "val_after": {k: round(v, 4) for k, v in after.items()},
        }
        previous = Path(model_dir) / "training_summary.json"
        if init_dir and previous.is_file():
            summary["previous_stage"] = json.loads(previous.read_text(encoding="utf-8"))
        summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
        save_model(backend, out, {"training_summary.json": summary, "training_log.json": log})
        _log(f"saved {out}")
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="model directory to write (replaced atomically)")
    p.add_argument("--init", type=Path, default=None, help="model to start from (default: fresh random init)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=360)
    p.add_argument("--passes", type=int, default=3, help="scoring passes (random strides) per episode")
    p.add_argument("--minutes", type=float, default=8.0, help="wall-clock cap on the optimisation loop")
    p.add_argument("--steps", type=int, default=4000, help="length of the learning-rate schedule")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop after this many steps (the schedule still spans --steps): replays a time-capped run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dense-weight", type=float, default=1.0,
                   help="weight of the per-token label loss (objects by colour, gripper, zone); 0 = state targets only")
    p.add_argument("--cache", type=Path, default=None,
                   help="pickle of the rendered composites: loaded if present, else written (development)")
    p.add_argument("--gripper-pos-weight", type=float, default=1.0,
                   help="weight of the gripper's positive tokens in the per-token label loss (it marks one "
                        "token per view: a rare positive)")
    p.add_argument("--kind-weights", type=parse_weights, default=None, metavar="KIND=W[,KIND=W]",
                   help="draw task kinds by these relative weights instead of round-robin (e.g. reach=1,push=0)")
    p.add_argument("--max-image-tokens", type=int, default=None,
                   help="image token budget of a fresh model (default: the shipped architecture's)")
    p.add_argument("--data-only", action="store_true", help="only render the composites (with --cache)")
    p.add_argument("--device", default="cpu", help="torch device for training (data synthesis stays on the CPU)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    warmup(args.out, init_dir=args.init, seed=args.seed, episodes=args.episodes, passes=args.passes,
           minutes=args.minutes, steps=args.steps, batch_size=args.batch_size, lr=args.lr, threads=args.threads,
           workers=args.workers, cache=args.cache, dense_weight=args.dense_weight,
           gripper_pos_weight=args.gripper_pos_weight,
           stop_after=args.stop_after, device=args.device, data_only=args.data_only,
           kind_weights=args.kind_weights, max_image_tokens=args.max_image_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
