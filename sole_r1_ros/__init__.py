"""sole_r1_ros: a video-language model as the sole reward signal for on-robot RL (SOLE-R1)."""

__version__ = "0.1.0"
