"""Checks of the launch files and the params file that need neither launch nor launch_ros: the files
are read as Python syntax trees and YAML and compared with the node, setup.py and package.xml."""

import ast
import contextlib
import runpy
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from unittest import mock

import pytest
import yaml

from fcn_segmentation.backends import BACKEND_NAMES

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_DIR = ROOT / "launch"
SEG_LAUNCH = LAUNCH_DIR / "seg.launch.py"
PACKAGE = ElementTree.parse(ROOT / "package.xml").getroot().findtext("name")
# Arguments with a fixed set of values; "" (keep the params file's value) may be added to them.
ENUM_ARGUMENTS = {"backend": set(BACKEND_NAMES), "log_level": {"debug", "info", "warn", "error", "fatal"},
                  "use_sim_time": {"true", "false"}, "respawn": {"true", "false"},
                  "test_time_flip": {"true", "false"}}
SPELLED_ARGUMENTS = ("log_level", "use_sim_time", "respawn", "test_time_flip")
ROS_BUILT_IN_PARAMETERS = {"use_sim_time"}  # declared by every rclpy node


@pytest.fixture(scope="module")
def node_parameters():
    from fcn_segmentation.ros.parameters import PARAMETERS  # the node's table; importable without ROS

    return PARAMETERS


def syntax_tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def calls(tree: ast.AST, name: str):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == name]


def keywords(call: ast.Call) -> dict:
    return {kw.arg: kw.value for kw in call.keywords}


def declared_arguments(path: Path) -> dict:
    declared = {}
    for call in calls(syntax_tree(path), "DeclareLaunchArgument"):
        name = ast.literal_eval(call.args[0])
        assert name not in declared, f"{path.name}: argument '{name}' declared twice"
        declared[name] = keywords(call)
    return declared


def assigned_constant(path: Path, name: str):
    for node in syntax_tree(path).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{path.name} has no constant {name}")


def setup_arguments() -> dict:
    """The arguments setup.py passes to setup(), by running it with setup() stubbed."""
    captured = {}
    with mock.patch("setuptools.setup", lambda **kwargs: captured.update(kwargs)), contextlib.chdir(ROOT):
        runpy.run_path(str(ROOT / "setup.py"))  # from ROOT: it globs relative paths
    return captured


def value(path: Path, node: ast.expr):
    """A literal, or the module constant a name refers to."""
    return assigned_constant(path, node.id) if isinstance(node, ast.Name) else ast.literal_eval(node)


def installed_files() -> dict:
    """setup.py's data_files as {installed path: source path}."""
    return {f"{folder}/{Path(source).name}": source for folder, sources in setup_arguments()["data_files"]
            for source in sources}


def test_launch_files_parse_and_define_generate_launch_description():
    paths = sorted(LAUNCH_DIR.glob("*.py"))
    assert {path.name for path in paths} >= {"seg.launch.py", "multi_camera.launch.py"}
    for path in paths:
        compile(path.read_text(), str(path), "exec")
        functions = {node.name for node in syntax_tree(path).body if isinstance(node, ast.FunctionDef)}
        assert "generate_launch_description" in functions, path.name


@pytest.mark.parametrize("path", sorted(LAUNCH_DIR.glob("*.py")), ids=lambda path: path.name)
def test_every_argument_has_a_description_and_enum_arguments_have_choices(path):
    for name, kwargs in declared_arguments(path).items():
        description = kwargs.get("description")
        assert isinstance(description, ast.Constant) and description.value.strip(), f"{name}: no description"
        if name in ENUM_ARGUMENTS:
            assert "choices" in kwargs, f"{name}: no choices"
            choices = ast.literal_eval(kwargs["choices"])
            # booleans and log levels in every usual spelling (True, FALSE, WARN, Info)
            assert {c.lower() for c in choices} - {""} == ENUM_ARGUMENTS[name], f"{name}: choices {choices}"
            if name in SPELLED_ARGUMENTS:
                assert set(choices) >= {s for word in ENUM_ARGUMENTS[name]
                                        for s in (word, word.capitalize(), word.upper())}, f"{name}: {choices}"
            assert ast.literal_eval(kwargs["default_value"]) in choices, f"{name}: default not among the choices"


def test_seg_launch_declares_the_documented_arguments():
    assert set(declared_arguments(SEG_LAUNCH)) >= {
        "camera", "image_topic", "camera_info_topic", "params_file", "backend", "model_path", "engine_cache_dir",
        "namespace", "use_sim_time", "log_level", "respawn", "respawn_delay"}


def test_default_params_file_is_installed_to_the_package_share():
    default = declared_arguments(SEG_LAUNCH)["params_file"]["default_value"]
    share, *parts = default.args[0].elts  # PathJoinSubstitution([FindPackageShare(<package>), ...parts])
    assert share.func.id == "FindPackageShare" and value(SEG_LAUNCH, share.args[0]) == PACKAGE
    relative = "/".join(ast.literal_eval(part) for part in parts)
    installed = installed_files()
    assert installed[f"share/{PACKAGE}/{relative}"] == relative
    assert installed[f"share/ament_index/resource_index/packages/{PACKAGE}"] == f"resource/{PACKAGE}"
    for path in LAUNCH_DIR.glob("*.py"):
        assert installed[f"share/{PACKAGE}/launch/{path.name}"] == f"launch/{path.name}"
    parameters = yaml.safe_load((ROOT / relative).read_text())[PACKAGE]["ros__parameters"]
    assert isinstance(parameters, dict) and parameters


def test_every_params_file_parameter_is_declared_by_the_node_with_its_type(node_parameters):
    for path in sorted((ROOT / "config").glob("*.yaml")):
        parameters = yaml.safe_load(path.read_text())[PACKAGE]["ros__parameters"]
        for name, value in parameters.items():
            assert name in node_parameters or name in ROS_BUILT_IN_PARAMETERS, \
                f"{path.name}: '{name}' is not a parameter of the node"
            if name in node_parameters:
                default = node_parameters[name][0]
                numeric = isinstance(default, float) and type(value) is int
                assert type(value) is type(default) or numeric, f"{path.name}: '{name}' should be a {type(default)}"


def test_default_params_file_lists_every_node_parameter_with_its_default(node_parameters):
    parameters = yaml.safe_load((ROOT / "config" / "seg.yaml").read_text())[PACKAGE]["ros__parameters"]
    missing = sorted(set(node_parameters) - set(parameters))
    assert not missing, f"config/seg.yaml lacks {missing}"
    for name, (default, *_rest) in node_parameters.items():
        assert parameters[name] == default, \
            f"seg.yaml's {name} = {parameters[name]!r}, the node's default is {default!r}"


def test_every_parameter_the_launch_file_sets_is_declared_by_the_node(node_parameters):
    set_by_launch = assigned_constant(SEG_LAUNCH, "PARAMETER_ARGUMENTS")
    assert set_by_launch
    for name in set_by_launch:
        assert name in node_parameters or name in ROS_BUILT_IN_PARAMETERS, f"the node has no parameter '{name}'"
        assert name in declared_arguments(SEG_LAUNCH), f"'{name}' is not a launch argument"


def test_launch_remaps_exactly_the_topics_the_node_subscribes():
    node_source = syntax_tree(ROOT / PACKAGE / "ros" / "node.py")
    subscribed = {ast.literal_eval(call.args[1]) for call in calls(node_source, "create_subscription")}
    (node,) = calls(syntax_tree(SEG_LAUNCH), "Node")
    remapped = {ast.literal_eval(rule.elts[0]) for rule in keywords(node)["remappings"].elts}
    assert remapped == subscribed


def test_launch_starts_the_packages_node_executable():
    (node,) = calls(syntax_tree(SEG_LAUNCH), "Node")
    executable = ast.literal_eval(keywords(node)["executable"])
    assert assigned_constant(SEG_LAUNCH, "PACKAGE") == PACKAGE == setup_arguments()["name"]
    scripts = [entry.split("=")[0].strip() for entry in setup_arguments()["entry_points"]["console_scripts"]]
    assert executable in scripts


def test_multi_camera_derives_only_seg_launch_arguments_per_camera():
    per_camera = assigned_constant(LAUNCH_DIR / "multi_camera.launch.py", "PER_CAMERA_ARGUMENTS")
    assert set(per_camera) <= set(declared_arguments(SEG_LAUNCH))
    assert {"camera", "namespace", "image_topic", "camera_info_topic"} <= set(per_camera)


def test_default_dds_profile_is_installed_and_gives_shared_memory_room_for_camera_images():
    default = declared_arguments(SEG_LAUNCH)["dds_profile"]["default_value"]
    # EnvironmentVariable(<variable>, default_value=PathJoinSubstitution([FindPackageShare(<package>), ...]))
    assert value(SEG_LAUNCH, default.args[0]) == "FASTDDS_DEFAULT_PROFILES_FILE"
    share, *parts = keywords(default)["default_value"].args[0].elts
    assert share.func.id == "FindPackageShare" and value(SEG_LAUNCH, share.args[0]) == PACKAGE
    relative = "/".join(ast.literal_eval(part) for part in parts)
    assert installed_files()[f"share/{PACKAGE}/{relative}"] == relative
    namespace = {"dds": "http://www.eprosima.com"}
    profile = ElementTree.parse(ROOT / relative).getroot()
    participant = profile.find("dds:profiles/dds:participant", namespace)
    assert participant.get("is_default_profile") == "true"
    used = {element.text for element in participant.findall("dds:rtps/dds:userTransports/dds:transport_id", namespace)}
    all_descriptors = profile.findall("dds:profiles/dds:transport_descriptors/dds:transport_descriptor", namespace)
    descriptors = {d.findtext("dds:transport_id", namespaces=namespace): d for d in all_descriptors}
    types = {descriptors[name].findtext("dds:type", namespaces=namespace): descriptors[name] for name in used}
    assert set(types) == {"SHM", "UDPv4"}, "shared memory on this machine, UDP to others"
    # the node's outputs for one 1280x720 frame, 9 bytes per pixel, fit twice
    assert int(types["SHM"].findtext("dds:segment_size", namespaces=namespace)) >= 2 * 9 * 1280 * 720
