"""The node as its own process for a test module's fixtures (real rclpy and Fast DDS)."""

import contextlib
from pathlib import Path

from fcn_segmentation.ros.client import start_node, stop_node


@contextlib.contextmanager
def node_running(params: dict, remaps: dict, log_dir: Path):
    """Yields (process, log path); on leaving, stops the node and fails if it did not exit cleanly
    or logged a traceback (a frame that broke something the test did not look at)."""
    log = Path(log_dir) / "node.log"
    process = start_node(params, remaps=remaps, log_path=str(log))
    try:
        yield process, log
    finally:
        code = stop_node(process)
    text = log.read_text()
    assert code == 0, f"node exited with {code}:\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
