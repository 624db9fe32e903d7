"""One fcn_segmentation node per camera, each in its camera's namespace (seg.launch.py per camera).

    ros2 launch fcn_segmentation multi_camera.launch.py cameras:=front,rear backend:=onnxruntime

Camera <c> is read from /<c>/image_raw and /<c>/camera_info; its outputs go to /<c>/segmentation/... .
All other seg.launch.py arguments (params_file, backend, respawn, ...) are shared by every camera.
"""

from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource, \
    get_launch_description_from_python_launch_file
from launch.substitutions import LaunchConfiguration

SEG_LAUNCH = str(Path(__file__).with_name("seg.launch.py"))
# Derived from each camera's name; a shared value would put every node on the same topics.
PER_CAMERA_ARGUMENTS = ("camera", "namespace", "image_topic", "camera_info_topic")


def include_cameras(context):
    cameras = [name.strip() for name in LaunchConfiguration("cameras").perform(context).split(",") if name.strip()]
    if not cameras or len(set(cameras)) != len(cameras):
        raise ValueError(f"cameras must list distinct camera names, e.g. cameras:=front,rear; got {cameras}")
    per_camera = {name: "" for name in PER_CAMERA_ARGUMENTS}
    return [GroupAction(scoped=True, actions=[IncludeLaunchDescription(
        PythonLaunchDescriptionSource(SEG_LAUNCH), launch_arguments={**per_camera, "camera": camera}.items())])
        for camera in cameras]


def generate_launch_description():
    shared = [arg for arg in get_launch_description_from_python_launch_file(SEG_LAUNCH).get_launch_arguments()
              if arg.name not in PER_CAMERA_ARGUMENTS]
    return LaunchDescription([
        DeclareLaunchArgument(
            "cameras", default_value="front,rear",
            description="comma-separated camera names; one node per camera, in namespace /<camera>"),
        *shared,
        OpaqueFunction(function=include_cameras),
    ])
