"""Start the fcn_segmentation node for one camera.

    ros2 launch fcn_segmentation seg.launch.py camera:=front backend:=onnxruntime

The camera publishes /<camera>/image_raw and /<camera>/camera_info; the node runs in the namespace
/<camera> and publishes /<camera>/segmentation/... and /<camera>/drivable_area/... . Arguments left
empty keep the value from the params file; `--show-args` lists them all.
"""

import hashlib
import os
import tempfile
from pathlib import Path

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "fcn_segmentation"
NODE_NAME = "fcn_segmentation"  # also the params file's section name
# Launch arguments that, when not empty, override the node parameter of the same name.
PARAMETER_ARGUMENTS = ("backend", "model_path", "engine_cache_dir", "use_sim_time", "test_time_flip")
BOOLEAN_PARAMETER_ARGUMENTS = ("use_sim_time", "test_time_flip")
DDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
# dds_profile:=none: leave the environment as it is (ros2 launch refuses an empty `dds_profile:=`).
DDS_PROFILE_NONE = "none"
# Booleans and log levels as ROS tutorials write them (True, FALSE, WARN, Info): the choices list every
# spelling for `ros2 launch`, which compares them exactly; launch_node reads them in lower case.

ARGUMENTS = [
    DeclareLaunchArgument(
        "camera", default_value="camera",
        description="camera name: it publishes /<camera>/image_raw and /<camera>/camera_info"),
    DeclareLaunchArgument(
        "image_topic", default_value="",
        description="image topic; empty = /<camera>/image_raw (input_transport compressed reads "
                    "<image_topic>/compressed)"),
    DeclareLaunchArgument(
        "camera_info_topic", default_value="", description="camera_info topic; empty = /<camera>/camera_info"),
    DeclareLaunchArgument(
        "namespace", default_value="",
        description="node namespace, the prefix of its output topics; empty = /<camera>"),
    DeclareLaunchArgument(
        "params_file", default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "seg.yaml"]),
        description="YAML file with the node parameters under 'fcn_segmentation: ros__parameters:'"),
    DeclareLaunchArgument(
        "backend", default_value="", choices=["", "auto", "tensorrt", "onnxruntime", "openvino", "torch"],
        description="inference backend; empty = the params file's"),
    DeclareLaunchArgument(
        "model_path", default_value="",
        description="model file (.pt), or a bundled model: default (EfficientNet-Lite0, 384x288) or accurate "
                    "(EfficientNet-Lite2, 640x480); empty = the params file's (whose "
                    "empty is the default)"),
    DeclareLaunchArgument(
        "engine_cache_dir", default_value="", description="TensorRT engine cache folder; empty = the params file's"),
    DeclareLaunchArgument(
        "use_sim_time", default_value="", choices=["", "true", "false", "True", "False", "TRUE", "FALSE"],
        description="take the node's time from /clock (simulation, bag replay); empty = the params file's "
                    "(default false)"),
    DeclareLaunchArgument(
        "test_time_flip", default_value="", choices=["", "true", "false", "True", "False", "TRUE", "FALSE"],
        description="average each frame's scores with its mirror image's (twice the network's work, more "
                    "accurate); empty = the params file's (default false)"),
    DeclareLaunchArgument(
        "log_level", default_value="info",
        choices=["debug", "info", "warn", "error", "fatal", "Debug", "Info", "Warn", "Error", "Fatal",
                 "DEBUG", "INFO", "WARN", "ERROR", "FATAL"],
        description="log level of the node"),
    DeclareLaunchArgument(
        "respawn", default_value="false", choices=["true", "false", "True", "False", "TRUE", "FALSE"],
        description="start the node again whenever it exits (a startup error then repeats every respawn_delay)"),
    DeclareLaunchArgument(
        "respawn_delay", default_value="2.0", description="seconds to wait before a respawn"),
    DeclareLaunchArgument(
        "dds_profile",
        default_value=EnvironmentVariable(DDS_PROFILE_VARIABLE, default_value=PathJoinSubstitution(
            [FindPackageShare(PACKAGE), "config", "fastdds_large_images.xml"])),
        description="Fast DDS XML profile for the node (sets FASTDDS_DEFAULT_PROFILES_FILE); default: the "
                    "environment's, else the package's, whose shared-memory segment fits camera images; "
                    "none = leave the environment as it is; a file that does not exist is an error"),
]


def params_file_for_node(params_file: str, node_fqn: str) -> str:
    """rcl applies a section named just `fcn_segmentation:` only to /fcn_segmentation, not to the
    node in a camera namespace; write a copy where that section carries the node's full name, so
    one file serves every camera. Other sections (`/**`, full names) keep their meaning."""
    with open(params_file) as stream:
        sections = yaml.safe_load(stream) or {}
    if NODE_NAME not in sections:
        return params_file
    shared = _node_parameters(params_file, NODE_NAME, sections.pop(NODE_NAME))
    specific = _node_parameters(params_file, node_fqn, sections.get(node_fqn, {"ros__parameters": {}}))
    sections[node_fqn] = {"ros__parameters": {**shared, **specific}}
    return _write_once(yaml.safe_dump(sections))


def _write_once(text: str) -> str:
    """The path of a file holding ``text``: one file per content (named by its hash), in a folder of
    this user's, so launches do not pile up files (the node, and each respawn, reads it as it starts:
    it must outlive the launch, and the next launch with the same content reuses it)."""
    folder = Path(tempfile.gettempdir()) / f"{NODE_NAME}_params_{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.is_symlink() or folder.stat().st_uid != os.getuid():
        raise RuntimeError(f"{folder} is not this user's own folder; remove it")
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if not path.is_file() or path.read_text() != text:
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as out:
            out.write(text)
        os.replace(out.name, path)  # whole, also for a launch reading it at the same time
    return str(path)


def dds_environment(dds_profile: str) -> dict:
    """The node's extra environment for the dds_profile argument; a file that does not exist is an
    error (Fast DDS would run with its defaults without a word)."""
    if not dds_profile or dds_profile.lower() == DDS_PROFILE_NONE:
        return {}
    if not os.path.isfile(dds_profile):
        source = f" (from ${DDS_PROFILE_VARIABLE})" if os.environ.get(DDS_PROFILE_VARIABLE) == dds_profile else ""
        raise RuntimeError(f"dds_profile {dds_profile}{source} does not exist; give an existing Fast DDS XML "
                           f"file, or dds_profile:={DDS_PROFILE_NONE} to leave the environment as it is")
    return {DDS_PROFILE_VARIABLE: dds_profile}


def _node_parameters(params_file: str, section: str, content) -> dict:
    """The section's parameters; a section without `ros__parameters` (a typo such as
    `ros_parameters:`) would otherwise be dropped without a word."""
    if not isinstance(content, dict) or not isinstance(content.get("ros__parameters"), dict):
        raise RuntimeError(f"{params_file}: section '{section}' has no 'ros__parameters:' mapping "
                           f"(found {sorted(content) if isinstance(content, dict) else content!r})")
    return content["ros__parameters"]


def launch_node(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    camera = arg("camera").strip("/")
    image_topic = arg("image_topic") or f"/{camera}/image_raw"
    namespace = "/" + (arg("namespace") or camera).strip("/")
    overrides = {name: ParameterValue(arg(name), value_type=str) for name in PARAMETER_ARGUMENTS if arg(name)}
    for name in BOOLEAN_PARAMETER_ARGUMENTS:
        if name in overrides:
            overrides[name] = arg(name).lower() == "true"
    params_file = params_file_for_node(arg("params_file"), namespace.rstrip("/") + "/" + NODE_NAME)
    try:
        respawn_delay = float(arg("respawn_delay"))
    except ValueError:
        raise ValueError(f"respawn_delay must be a number of seconds, got '{arg('respawn_delay')}'") from None
    environment = dds_environment(arg("dds_profile"))
    return [Node(
        package=PACKAGE, executable="segmentation_node", name=NODE_NAME, namespace=namespace,
        additional_env=environment or None,
        parameters=[params_file] + ([overrides] if overrides else []),
        remappings=[("image", image_topic), ("image/compressed", image_topic + "/compressed"),
                    ("camera_info", arg("camera_info_topic") or f"/{camera}/camera_info")],
        ros_arguments=["--log-level", arg("log_level").lower()],
        respawn=arg("respawn").lower() == "true", respawn_delay=respawn_delay, output="screen")]


def generate_launch_description():
    return LaunchDescription(ARGUMENTS + [OpaqueFunction(function=launch_node)])
