"""Entry point of ``segmentation_node``: a stop signal during the seconds of imports (torch, rclpy)
ends the process quietly, as one during the node's start or run does (``node.main``)."""

import signal
import sys


_stop_requested = False


def _stop_while_importing(signum, frame):
    global _stop_requested
    _stop_requested = True
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
    except ImportError:
        # The signal interrupted a C extension's initialisation (rclpy's), which Python reports as
        # "ImportError: initialization failed": still a stop, not a broken install.
        if _stop_requested:
            return 0
        raise
    return node_main(args)


if __name__ == "__main__":
    sys.exit(main())
