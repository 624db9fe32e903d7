"""Shared by the launch_testing modules (not a test module itself)."""


def missing_launch_requirement():
    """Why the launch cannot run here, or None. Marked rather than skipped at import: the
    launch_testing plugin imports every test module while collecting, and a module-level skip
    there skips the whole test directory."""
    try:
        import launch_ros  # noqa: F401
        from ament_index_python.packages import get_package_prefix

        get_package_prefix("fcn_segmentation")  # where launch_ros finds segmentation_node
    except ImportError as exc:
        return f"launch_ros is not importable ({exc}); see docs/launch.md"
    except (LookupError, OSError):  # package not found / AMENT_PREFIX_PATH not set
        return "fcn_segmentation is not in the ament index (AMENT_PREFIX_PATH): build it with colcon or see " \
               "docs/launch.md"
    return None
