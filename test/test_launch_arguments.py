"""What seg.launch.py and multi_camera.launch.py would start for given arguments: the launch files
are evaluated with real launch / launch_ros, but no process is started. Skipped without them."""

from pathlib import Path

import pytest
import yaml

# A module-level skip here would, under the launch_testing pytest plugin (which imports every test
# module while collecting), skip the whole test directory; so mark the tests instead.
try:
    from launch import LaunchContext
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node
except ImportError as exc:
    try:  # without the package, this checkout's launch/ folder imports as a namespace package
        import launch as _found
        installed = getattr(_found, "__file__", None) is not None
    except ImportError:
        installed = False
    missing = f"launch / launch_ros not importable ({exc})" if installed else "launch is not installed"
    pytestmark = pytest.mark.skip(reason=f"{missing}: run in a ROS 2 workspace (docs/launch.md)")

ROOT = Path(__file__).resolve().parents[1]
SEG_LAUNCH = ROOT / "launch" / "seg.launch.py"
MULTI_LAUNCH = ROOT / "launch" / "multi_camera.launch.py"


@pytest.fixture
def package_share(tmp_path, monkeypatch):
    """An ament prefix holding this checkout's share files, so FindPackageShare resolves the
    default params file the way it does in an installed workspace."""
    (tmp_path / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (tmp_path / "share" / "ament_index" / "resource_index" / "packages" / "fcn_segmentation").touch()
    share = tmp_path / "share" / "fcn_segmentation"
    share.mkdir()
    (share / "config").symlink_to(ROOT / "config")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    return share


def launched_nodes(launch_file: Path, **arguments):
    """The Node actions the launch file yields for `name:=value` arguments, expanded as Node.execute
    does just before it starts the process."""
    context = LaunchContext()
    nodes = []

    def visit(entity):
        if isinstance(entity, Node):
            entity._perform_substitutions(context)
            nodes.append(entity)
            return
        for child in entity.visit(context) or []:
            visit(child)

    visit(IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)),
                                   launch_arguments=arguments.items()))
    return nodes, context


def command_line(node, context):
    """The node's command line, less the name/namespace tokens that need the process's locals."""
    tokens = []
    for token in node.cmd:
        try:
            tokens.append(perform_substitutions(context, token))
        except Exception:  # LocalSubstitution of ros_specific_arguments
            continue
    return tokens


def params_files(node, context):
    tokens = command_line(node, context)
    return [yaml.safe_load(Path(tokens[i + 1]).read_text()) for i, token in enumerate(tokens)
            if token == "--params-file"]


def packaged_parameters():
    return yaml.safe_load((ROOT / "config" / "seg.yaml").read_text())["fcn_segmentation"]["ros__parameters"]


def test_defaults_follow_the_camera_name_and_use_the_packaged_params_file(package_share):
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front")
    assert node.node_name == "/front/fcn_segmentation"
    assert dict(node.expanded_remapping_rules) == {
        "image": "/front/image_raw", "image/compressed": "/front/image_raw/compressed",
        "camera_info": "/front/camera_info"}
    # the file's `fcn_segmentation:` section, re-keyed to the node's full name; no overrides
    assert params_files(node, context) == [{"/front/fcn_segmentation": {"ros__parameters": packaged_parameters()}}]
    tokens = command_line(node, context)
    assert tokens[tokens.index("--log-level") + 1] == "info"


def test_topic_and_namespace_arguments_replace_the_camera_defaults(package_share):
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front", image_topic="/cams/left/image_rect",
                                      camera_info_topic="/cams/left/info", namespace="perception/left")
    assert node.node_name == "/perception/left/fcn_segmentation"
    assert dict(node.expanded_remapping_rules) == {
        "image": "/cams/left/image_rect", "image/compressed": "/cams/left/image_rect/compressed",
        "camera_info": "/cams/left/info"}
    assert list(params_files(node, context)[0]) == ["/perception/left/fcn_segmentation"]


def test_parameter_arguments_override_the_params_file_only_when_given(package_share):
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front", backend="torch", engine_cache_dir="2024",
                                      use_sim_time="true", log_level="debug", model_path="accurate",
                                      test_time_flip="True")
    from_file, overrides = params_files(node, context)
    assert from_file["/front/fcn_segmentation"]["ros__parameters"]["backend"] == "auto"
    # a folder named like a number stays a string; use_sim_time and test_time_flip are bool parameters
    assert overrides == {"/front/fcn_segmentation": {"ros__parameters": {
        "backend": "torch", "engine_cache_dir": "2024", "use_sim_time": True, "model_path": "accurate",
        "test_time_flip": True}}}
    tokens = command_line(node, context)
    assert tokens[tokens.index("--log-level") + 1] == "debug"


def node_environment(node, context) -> dict:
    return {perform_substitutions(context, key): perform_substitutions(context, value)
            for key, value in node.additional_env or []}


def test_dds_profile_is_the_packaged_one_unless_the_environment_or_argument_names_another(package_share,
                                                                                          monkeypatch, tmp_path):
    car, stack = tmp_path / "car.xml", tmp_path / "stack.xml"
    car.write_text("<dds/>")
    stack.write_text("<dds/>")
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front")
    assert node_environment(node, context) == {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(package_share / "config" / "fastdds_large_images.xml")}
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front", dds_profile=str(car))
    assert node_environment(node, context) == {"FASTDDS_DEFAULT_PROFILES_FILE": str(car)}
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front", dds_profile="")
    assert node_environment(node, context) == {}
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", str(stack))
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front")
    assert node_environment(node, context) == {"FASTDDS_DEFAULT_PROFILES_FILE": str(stack)}


@pytest.mark.parametrize("spelling", ["none", "None", "NONE"])
def test_dds_profile_none_leaves_the_environment_as_it_is(package_share, monkeypatch, spelling):
    """`ros2 launch` refuses an empty `dds_profile:=`; `dds_profile:=none` is how to say it."""
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front", dds_profile=spelling)
    assert node_environment(node, context) == {}
    assert node.additional_env is None


@pytest.mark.parametrize("from_environment", [False, True])
def test_a_dds_profile_that_does_not_exist_is_an_error(package_share, monkeypatch, from_environment):
    missing = "/nonexistent/dds/car.xml"
    if from_environment:
        monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", missing)
        arguments = {}
    else:
        arguments = {"dds_profile": missing}
    with pytest.raises(RuntimeError, match=f"dds_profile {missing}.* does not exist; .*dds_profile:=none"):
        launched_nodes(SEG_LAUNCH, camera="front", **arguments)


def respawns(node, context) -> bool:
    """What ExecuteLocal respawns on (private to it: no public accessor)."""
    value = node._ExecuteLocal__respawn
    if isinstance(value, bool):
        return value
    from launch.utilities.type_utils import perform_typed_substitution
    return perform_typed_substitution(context, value, bool)


@pytest.mark.parametrize("true, false, level", [("True", "False", "WARN"), ("TRUE", "FALSE", "Info"),
                                                ("true", "false", "Debug")])
def test_booleans_and_log_levels_take_the_usual_spellings(package_share, true, false, level):
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front", use_sim_time=true, respawn=true, log_level=level)
    assert params_files(node, context)[1]["/front/fcn_segmentation"]["ros__parameters"]["use_sim_time"] is True
    assert respawns(node, context) is True
    tokens = command_line(node, context)
    assert tokens[tokens.index("--log-level") + 1] == level.lower()
    (node,), context = launched_nodes(SEG_LAUNCH, camera="front", use_sim_time=false, respawn=false)
    assert params_files(node, context)[1]["/front/fcn_segmentation"]["ros__parameters"]["use_sim_time"] is False
    assert respawns(node, context) is False


def test_launches_do_not_pile_up_params_files(package_share, tmp_path, monkeypatch):
    """Each launch passes the node a re-keyed copy of the params file: one file per content, reused,
    not one new /tmp file per start."""
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    paths = set()
    for _ in range(5):
        (node,), context = launched_nodes(SEG_LAUNCH, camera="front")
        tokens = command_line(node, context)
        paths.add(tokens[tokens.index("--params-file") + 1])
    (node,), context = launched_nodes(SEG_LAUNCH, camera="rear")
    tokens = command_line(node, context)
    paths.add(tokens[tokens.index("--params-file") + 1])
    written = sorted(str(p) for p in tmp_path.rglob("*.yaml"))
    assert len(paths) == 2 and sorted(paths) == written, (paths, written)
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_given_params_file_keeps_its_other_sections(tmp_path, package_share):
    params = tmp_path / "robot.yaml"
    params.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"use_sim_time": True}},
        "fcn_segmentation": {"ros__parameters": {"backend": "torch", "qos_depth": 3}},
        "/rear/fcn_segmentation": {"ros__parameters": {"qos_depth": 5}}}))
    (node,), context = launched_nodes(SEG_LAUNCH, camera="rear", params_file=str(params))
    assert params_files(node, context) == [{
        "/**": {"ros__parameters": {"use_sim_time": True}},
        "/rear/fcn_segmentation": {"ros__parameters": {"backend": "torch", "qos_depth": 5}}}]


@pytest.mark.parametrize("arguments, message", [
    ({"backend": "tensorflow"}, "backend"),
    ({"log_level": "verbose"}, "log_level"),
    ({"respawn_delay": "soon"}, "respawn_delay must be a number"),
])
def test_bad_arguments_are_refused_with_the_argument_named(package_share, arguments, message):
    with pytest.raises((RuntimeError, ValueError), match=message):
        launched_nodes(SEG_LAUNCH, **arguments)


def test_multi_camera_starts_one_node_per_camera_in_its_namespace(package_share):
    # a stray namespace/image_topic on the command line must not put both nodes on the same topics
    nodes, context = launched_nodes(MULTI_LAUNCH, cameras="front, rear", backend="torch",
                                    namespace="/oops", image_topic="/oops/image")
    assert [node.node_name for node in nodes] == ["/front/fcn_segmentation", "/rear/fcn_segmentation"]
    for node, camera in zip(nodes, ("front", "rear")):
        remaps = dict(node.expanded_remapping_rules)
        assert (remaps["image"], remaps["camera_info"]) == (f"/{camera}/image_raw", f"/{camera}/camera_info")
        assert params_files(node, context)[1][f"/{camera}/fcn_segmentation"]["ros__parameters"] == {"backend": "torch"}


@pytest.mark.parametrize("cameras", ["", "front,front"])
def test_multi_camera_refuses_empty_or_repeated_camera_names(package_share, cameras):
    with pytest.raises(ValueError, match="distinct camera names"):
        launched_nodes(MULTI_LAUNCH, cameras=cameras)


def test_a_params_file_section_without_ros__parameters_is_an_error_not_silence(tmp_path, package_share):
    params = tmp_path / "typo.yaml"
    params.write_text(yaml.safe_dump({"fcn_segmentation": {"ros_parameters": {"backend": "torch"}}}))
    with pytest.raises(RuntimeError, match="section 'fcn_segmentation' has no 'ros__parameters:' mapping"):
        launched_nodes(SEG_LAUNCH, camera="front", params_file=str(params))
