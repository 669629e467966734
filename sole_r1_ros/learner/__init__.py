"""The learner's side: a reward client for request mode and a relabelling replay buffer.

Plain Python except :mod:`sole_r1_ros.learner.ros_client` (rclpy); no torch, no gymnasium.
"""
