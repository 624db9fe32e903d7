"""Start the fcn_segmentation node for one camera.

    ros2 launch fcn_segmentation seg.launch.py camera:=front backend:=onnxruntime

The camera publishes /<camera>/image_raw and /<camera>/camera_info; the node runs in the namespace
/<camera> and publishes /<camera>/segmentation/... and /<camera>/drivable_area/... . Arguments left
empty keep the value from the params file; `--show-args` lists them all.
"""

import tempfile

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
PARAMETER_ARGUMENTS = ("backend", "model_path", "engine_cache_dir", "use_sim_time")
DDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"

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
        "backend", default_value="", choices=["", "auto", "tensorrt", "onnxruntime", "torch"],
        description="inference backend; empty = the params file's"),
    DeclareLaunchArgument(
        "model_path", default_value="",
        description="model file (.pt); empty = the params file's (whose empty is the bundled CamVid model)"),
    DeclareLaunchArgument(
        "engine_cache_dir", default_value="", description="TensorRT engine cache folder; empty = the params file's"),
    DeclareLaunchArgument(
        "use_sim_time", default_value="", choices=["", "true", "false"],
        description="take the node's time from /clock (simulation, bag replay); empty = the params file's "
                    "(default false)"),
    DeclareLaunchArgument(
        "log_level", default_value="info", choices=["debug", "info", "warn", "error", "fatal"],
        description="log level of the node"),
    DeclareLaunchArgument(
        "respawn", default_value="false", choices=["true", "false"],
        description="start the node again whenever it exits (a startup error then repeats every respawn_delay)"),
    DeclareLaunchArgument(
        "respawn_delay", default_value="2.0", description="seconds to wait before a respawn"),
    DeclareLaunchArgument(
        "dds_profile",
        default_value=EnvironmentVariable(DDS_PROFILE_VARIABLE, default_value=PathJoinSubstitution(
            [FindPackageShare(PACKAGE), "config", "fastdds_large_images.xml"])),
        description="Fast DDS XML profile for the node (sets FASTDDS_DEFAULT_PROFILES_FILE); default: the "
                    "environment's, else the package's, whose shared-memory segment fits camera images; "
                    "empty = leave the environment as it is"),
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
    with tempfile.NamedTemporaryFile("w", prefix=f"{NODE_NAME}_", suffix=".yaml", delete=False) as out:
        yaml.safe_dump(sections, out)
    return out.name


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
    if "use_sim_time" in overrides:
        overrides["use_sim_time"] = arg("use_sim_time") == "true"
    params_file = params_file_for_node(arg("params_file"), namespace.rstrip("/") + "/" + NODE_NAME)
    try:
        respawn_delay = float(arg("respawn_delay"))
    except ValueError:
        raise ValueError(f"respawn_delay must be a number of seconds, got '{arg('respawn_delay')}'") from None
    dds_profile = arg("dds_profile")
    return [Node(
        package=PACKAGE, executable="segmentation_node", name=NODE_NAME, namespace=namespace,
        additional_env={DDS_PROFILE_VARIABLE: dds_profile} if dds_profile else None,
        parameters=[params_file] + ([overrides] if overrides else []),
        remappings=[("image", image_topic), ("image/compressed", image_topic + "/compressed"),
                    ("camera_info", arg("camera_info_topic") or f"/{camera}/camera_info")],
        ros_arguments=["--log-level", arg("log_level")],
        respawn=arg("respawn") == "true", respawn_delay=respawn_delay, output="screen")]


def generate_launch_description():
    return LaunchDescription(ARGUMENTS + [OpaqueFunction(function=launch_node)])
