"""Train the built-in default rewarder: a small Qwen3-VL fine-tuned on synthesized trajectories.

``dataset`` turns synthetic episodes into per-step examples in the scorer's own protocol,
``vision_warmup`` pre-trains the vision tower, ``train`` runs supervised fine-tuning on CPU,
``rlvr`` is an optional RL-from-verifiable-reward (GRPO) stage, ``recipe`` runs the default
model's stages in one timed command, and ``evaluate`` scores held-out episodes through the
production :class:`~sole_r1_ros.core.scorer.ProgressScorer`.
"""
