"""The node's entry point under stop signals that land inside the interpreter's own machinery."""

import subprocess
import sys
import textwrap


# A stop signal whose Python handler runs inside a weakref callback of importlib's module locks:
# an exception raised there is printed as "Exception ignored in ..." with a traceback and lost.
_SIGNAL_INSIDE_A_WEAKREF_CALLBACK = textwrap.dedent("""
    import signal
    import sys
    import weakref

    from fcn_segmentation.ros import node_main


    class Box:
        pass


    class StopInsideAWeakrefCallback:
        def find_spec(self, name, path, target=None):
            if name == "fcn_segmentation.ros.node":
                box = Box()
                ref = weakref.ref(box, lambda _: signal.raise_signal(signal.SIGINT))
                del box
                print("the imports went on after the stop", flush=True)
            return None


    sys.meta_path.insert(0, StopInsideAWeakrefCallback())
    sys.exit(node_main.main([]))
""")


def test_a_stop_signal_inside_a_weakref_callback_while_importing_ends_the_start_quietly():
    """CI run of stop 24: the first SIGINT's KeyboardInterrupt was swallowed by importlib's weakref
    callback, printing a traceback, and the start went on importing until its next check."""
    result = subprocess.run([sys.executable, "-c", _SIGNAL_INSIDE_A_WEAKREF_CALLBACK],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "went on" not in result.stdout, result.stdout
