"""Entry point of ``segmentation_node``: a stop signal during the seconds of imports (torch, rclpy)
ends the process quietly, as one during the node's start or run does (``node.main``)."""

import os
import signal
import sys


_stop_requested = False


def _stop_while_importing(signum, frame):
    global _stop_requested
    if _stop_requested:  # a second signal while the first one unwinds the imports: the same stop
        return
    _stop_requested = True
    raise KeyboardInterrupt


def _exit_stopped() -> None:
    """End a start stopped during its imports, with exit code 0. Nothing is running yet that needs
    the interpreter's clean-up, and skipping it matters: the clean-up puts the default handlers
    back, and a second Ctrl-C or SIGTERM then killed the process (exit -2, -15)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def main(args=None) -> int:
    # Until rclpy.init installs its handlers; it chains to these, so a later SIGTERM also arrives
    # as KeyboardInterrupt, which node.main turns into a clean shutdown.
    signal.signal(signal.SIGINT, _stop_while_importing)
    signal.signal(signal.SIGTERM, _stop_while_importing)
    try:
        from .node import main as node_main
    except KeyboardInterrupt:
        _exit_stopped()
    except ImportError:
        # The signal interrupted a C extension's initialisation (rclpy's), which Python reports as
        # "ImportError: initialization failed": still a stop, not a broken install.
        if _stop_requested:
            _exit_stopped()
        raise
    if _stop_requested:  # the signal came while a library swallowed the KeyboardInterrupt
        _exit_stopped()
    try:
        return node_main(args)
    except KeyboardInterrupt:  # a stop signal in the instant before node.main's own handling began
        _exit_stopped()


if __name__ == "__main__":
    sys.exit(main())
