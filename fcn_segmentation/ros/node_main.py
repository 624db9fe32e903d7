"""Entry point of ``segmentation_node``: a stop signal during the seconds of imports (torch, rclpy)
ends the process quietly, as one during the node's start or run does (``node.main``)."""

import signal
import sys


def _stop_while_importing(signum, frame):
    raise KeyboardInterrupt


def main(args=None) -> int:
    # Until rclpy.init installs its handlers; it chains to these, so a later SIGTERM also arrives
    # as KeyboardInterrupt, which node.main turns into a clean shutdown.
    signal.signal(signal.SIGINT, _stop_while_importing)
    signal.signal(signal.SIGTERM, _stop_while_importing)
    try:
        from .node import main as node_main
    except KeyboardInterrupt:
        return 0
    return node_main(args)


if __name__ == "__main__":
    sys.exit(main())
