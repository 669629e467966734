"""Synthetic tabletop episodes with ground-truth progress, and rosbag2 / video export.

Plain Python (numpy + OpenCV); the bag writer additionally needs ``rosbags``.
"""

from .episodes import DEFAULT_START_NS, OUTCOMES, TASK_KINDS, Episode, frame_stamp_ns, generate_episode

__all__ = ["DEFAULT_START_NS", "OUTCOMES", "TASK_KINDS", "Episode", "frame_stamp_ns", "generate_episode"]
