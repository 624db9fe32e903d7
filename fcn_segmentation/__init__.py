"""FCN semantic segmentation for ROS 2: a pure-Python core plus a thin ROS layer (``fcn_segmentation.ros``)."""

__version__ = "0.1.0"
