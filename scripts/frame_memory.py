"""Peak resident memory and time of one compressed frame through decode + segmentation (issue 17, item 3).

    .venv/bin/python scripts/frame_memory.py --out models/eval/frame_memory.json

Each case runs in a fresh process (the model and backend loaded and warmed up on a 480x360 frame first), so
the reported growth of the peak RSS (VmHWM) is what the frame itself costs: the decoded picture, the
network input, the scores and the image-sized class mask. ``reduced`` is what the node does (a JPEG decoded
at 1/2-1/8 scale when the network needs no more); ``full`` decodes the whole frame first.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASE = r'''
import json, sys, time
import cv2, numpy as np
sys.path.insert(0, {root!r})
from fcn_segmentation.backends import create_backend
from fcn_segmentation.defaults import default_model_path
from fcn_segmentation.frames import decode_compressed_frame
from fcn_segmentation.pipeline import Segmenter

def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024

segmenter = Segmenter(create_backend("onnxruntime", str(default_model_path()))[0], full_resolution_logits={full_res})
info = segmenter.info
small = cv2.imencode(".jpg", np.full((360, 480, 3), 90, np.uint8))[1].tobytes()
for _ in range(3):
    frame = decode_compressed_frame("jpeg", small, 1 << 40, (info.input_height, info.input_width))
    segmenter(frame.rgb, (frame.height, frame.width))
data = open({jpeg!r}, "rb").read()
before = hwm()
started = time.perf_counter()
frame = decode_compressed_frame("jpeg", data, 1 << 40, (info.input_height, info.input_width) if {reduced} else None)
result = segmenter(frame.rgb, (frame.height, frame.width))
elapsed = time.perf_counter() - started
print(json.dumps(dict(jpeg_bytes=len(data), decoded=list(frame.rgb.shape[:2]), mask=list(result.classes.shape),
                      rss_before_mb=round(before), peak_growth_mb=round(hwm() - before, 1), seconds=round(elapsed, 3))))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out")
    args = parser.parse_args()
    root = str(Path(__file__).resolve().parent.parent)
    cases = []
    import cv2
    import numpy as np

    folder = Path(tempfile.mkdtemp())
    for height, width in ((360, 480), (2160, 3840), (4096, 4096), (8192, 8192)):
        # Blocks of noise: a JPEG of realistic size for the frame (made here, so the child's peak is its own).
        noise = np.random.default_rng(0).integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        jpeg = folder / f"{width}x{height}.jpg"
        cv2.imwrite(str(jpeg), cv2.resize(noise, (width, height), interpolation=cv2.INTER_NEAREST))
        del noise
        for reduced in (True, False):
            for full_res in ((False, True) if reduced else (False,)):
                code = CASE.format(root=root, jpeg=str(jpeg), reduced=reduced, full_res=full_res)
                out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
                row = dict(size=f"{width}x{height}", decode="reduced" if reduced else "full",
                           full_resolution_logits=full_res)
                row.update(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0
                           else dict(error=out.stderr[-500:]))
                print(json.dumps(row), flush=True)
                cases.append(row)
    report = {"command": " ".join(sys.argv), "when": time.strftime("%Y-%m-%d"), "cases": cases}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
