"""The ROS 2 layer: a thin node over the pure-Python core. Importing it needs rclpy."""
