"""The interactive synthetic tabletop: a gymnasium env and its ROS camera/actuator driver."""
