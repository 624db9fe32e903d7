"""How many damaged JPEGs each decoder notices, and what a decode costs (issue 17, item 2).

    .venv/bin/python scripts/jpeg_corruption_study.py --data ../shared/datasets/camvid \
        --out models/eval/jpeg_corruption.json

Real CamVid val frames are encoded as JPEG (quality 90, as a camera driver would) and damaged the ways a
lossy link damages MJPEG: cut at 10-95% of the data with an end-of-image marker appended (lost USB
packets), bytes of the entropy-coded data flipped, and a piece of another frame's data spliced in. Each
damaged file goes to OpenCV's imdecode (what the node used), Pillow (LOAD_TRUNCATED_IMAGES off),
simplejpeg (libjpeg-turbo; strict: libjpeg's "Corrupt JPEG data" / "Premature end" warnings raise) and
``fcn_segmentation.frames.decode_compressed`` (what the node uses now); "caught" = raised instead of
returning a picture.
"""

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fcn_segmentation.frames import FrameError, decode_compressed  # noqa: E402


def _scan_start(data: bytes) -> int:
    """Byte after the first SOS segment's header: where the entropy-coded data begins."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")


def damaged(jpegs, rng):
    for index, data in enumerate(jpegs):
        start = _scan_start(data)
        for cut in (0.1, 0.25, 0.5, 0.75, 0.9, 0.95):
            yield "cut_with_eoi", data[:start + int((len(data) - 2 - start) * cut)] + b"\xff\xd9"
        for flips in (1, 2, 4, 8, 16):
            buf = bytearray(data)
            for _ in range(flips):
                position = rng.randrange(start, len(data) - 2)
                buf[position] ^= 1 << rng.randrange(8)
            yield f"bit_flips_{flips}", bytes(buf)
        other = jpegs[(index + 1) % len(jpegs)]
        other_start = _scan_start(other)
        a = rng.randrange(start, len(data) - 2)
        b = rng.randrange(other_start, len(other) - 2)
        length = rng.randrange(64, 4096)
        yield "spliced", data[:a] + other[b:b + length] + data[a:]
        yield "inserted_bytes", data[:a] + bytes(rng.randrange(256) for _ in range(64)) + data[a:]


def _opencv(data):
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _pillow(data):
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


def _simplejpeg(data):
    import simplejpeg

    return simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)


def _node(data):
    return decode_compressed("jpeg", data)


DECODERS = {"opencv_imdecode": _opencv, "pillow": _pillow, "simplejpeg_strict": _simplejpeg,
            "node_decode_compressed": _node}


def caught(decode, data) -> bool:
    try:
        return decode(data) is None  # OpenCV returns None for what it cannot decode at all
    except (ValueError, OSError, SyntaxError, FrameError):
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CamVid folder (its val/ frames are used)")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--out", help="JSON report")
    args = parser.parse_args()
    rng = random.Random(0)
    paths = sorted((Path(args.data) / "val").glob("*.png"))[:args.frames]
    jpegs = [cv2.imencode(".jpg", cv2.imread(str(p)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes() for p in paths]
    totals = {}
    for kind, data in damaged(jpegs, rng):
        row = totals.setdefault(kind, {"files": 0, **{name: 0 for name in DECODERS}})
        row["files"] += 1
        for name, decode in DECODERS.items():
            row[name] += caught(decode, data)
    overall = {name: sum(row[name] for row in totals.values()) for name in DECODERS}
    files = sum(row["files"] for row in totals.values())
    false_alarms = {name: sum(caught(decode, data) for data in jpegs) for name, decode in DECODERS.items()}
    cost = {}
    for name, decode in DECODERS.items():
        decode(jpegs[0])
        started = time.perf_counter()
        for _ in range(5):
            for data in jpegs:
                decode(data)
        cost[name] = (time.perf_counter() - started) * 1e3 / (5 * len(jpegs))
    report = {"command": " ".join(sys.argv), "frames": len(jpegs), "damaged_files": files,
              "caught": overall, "catch_rate": {k: v / files for k, v in overall.items()},
              "by_kind": totals, "intact_files_refused": false_alarms,
              "decode_ms_per_480x360_frame": cost}
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
