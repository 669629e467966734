"""Example learner: SAC with action chunking, rewarded only by the reward node (see docs/learning.md)."""
