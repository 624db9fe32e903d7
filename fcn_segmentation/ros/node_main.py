"""Entry point of ``segmentation_node``: a stop signal during the seconds of imports (torch, rclpy)
ends the process quietly, as one during the node's start or run does (``node.main``)."""

import os
import signal
import sys


_importing = True
_stop_requested = False


def _on_stop_signal(signum, frame):
    global _stop_requested
    if _importing:
        # Ends the process here rather than raising: a KeyboardInterrupt raised inside one of
        # importlib's weakref callbacks is printed as a traceback and lost, and the start goes on.
        _exit_stopped()
    if _stop_requested:  # a second signal while the first one unwinds the start: the same stop
        return
    _stop_requested = True
    raise KeyboardInterrupt


def _exit_stopped() -> None:
    """End a start stopped before the node exists, with exit code 0. Nothing is running yet that
    needs the interpreter's clean-up, and skipping it matters: the clean-up puts the default
    handlers back, and a second Ctrl-C or SIGTERM then killed the process (exit -2, -15)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def main(args=None) -> int:
    global _importing
    # Until rclpy.init installs its handlers; it chains to these, so a later SIGTERM also arrives
    # as KeyboardInterrupt, which node.main turns into a clean shutdown.
    signal.signal(signal.SIGINT, _on_stop_signal)
    signal.signal(signal.SIGTERM, _on_stop_signal)
    from .node import main as node_main
    _importing = False
    try:
        return node_main(args)
    except KeyboardInterrupt:  # a stop signal in the instant before node.main's own handling began
        _exit_stopped()


if __name__ == "__main__":
    sys.exit(main())
