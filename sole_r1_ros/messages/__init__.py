"""ROS message handling without rclpy: image decoding, serialized (CDR) messages and rosbag2 I/O."""
