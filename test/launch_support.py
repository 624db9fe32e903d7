"""Shared by the launch_testing modules (not a test module itself)."""

import os


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


def launch_for_test(launch_file: str, arguments: dict, env: dict = None):
    """The test's LaunchDescription: ``env`` set for the launched processes, the package's launch
    file included with ``arguments``, then ReadyToTest."""
    from pathlib import Path

    import launch_testing.actions
    from launch import LaunchDescription
    from launch.actions import IncludeLaunchDescription, SetEnvironmentVariable
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    path = Path(__file__).resolve().parents[1] / "launch" / launch_file
    return LaunchDescription([
        *(SetEnvironmentVariable(name, value) for name, value in (env or {}).items()),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(path)), launch_arguments=arguments.items()),
        launch_testing.actions.ReadyToTest(),
    ])


def set_environment(env: dict):
    """Set ``env`` in this process (the test's DDS domain); returns the function that puts back what
    was there before."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)

    def restore():
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return restore


def open_dds_session(test_class, env: dict):
    """For a launch test class: set ``env`` (the test's DDS domain), init rclpy and return an
    executor, each undone by a class cleanup, which unittest runs even when setUpClass fails, so
    the next test module can init rclpy again."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    test_class.addClassCleanup(set_environment(env))
    rclpy.init()
    test_class.addClassCleanup(rclpy.try_shutdown)
    executor = SingleThreadedExecutor()
    test_class.addClassCleanup(executor.shutdown)
    return executor
