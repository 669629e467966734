"""The ROS 2 glue: the reward node and its parameter declarations."""
