#!/usr/bin/env python3
"""The Python loop `yoloswap bench-stream` is measured against: what a vision integrator writes by hand today.

cv2.VideoCapture decodes the video frame by frame; each frame goes through the reference pipeline of
tools/reference.py (Ultralytics' letterbox, onnxruntime CPU, NMS, scale_boxes), one frame after another, no
threads of our own. Prints one JSON object:
  {"frames", "seconds", "fps", "latency_p50_ms", "latency_p99_ms", "threads", "model", "video"}
(latency: from the frame read to its detections).

Usage:
  python tools/stream_reference.py --model models/yolov3-tiny-coco-416.onnx --threads 2 video.mp4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: ORT's default)")
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--max-det", type=int, default=300)
    parser.add_argument("video")
    args = parser.parse_args(argv)
    args.agnostic = False

    session, info = reference.open_model(args.model, args.threads or None, 640)
    names_nc = len(info.names) if info.names else None
    capture = cv2.VideoCapture(args.video)
    if not capture.isOpened():
        print(f"cannot open {args.video}", file=sys.stderr)
        return 1
    latencies = []
    frames = 0
    start = time.perf_counter()
    while True:
        ok, image = capture.read()
        if not ok:
            break
        t0 = time.perf_counter()
        tensor = reference.to_tensor(reference.letterbox(image, info.imgsz), info.input_dtype)
        output = session.run(None, {info.input_name: tensor})[0]
        fmt = reference.detect_format(output.shape, names_nc, info.end2end)
        boxes, _, _ = reference.postprocess(output, fmt, args.conf, args.iou, args.max_det, args.agnostic)
        reference.scale_boxes(boxes, info.imgsz, image.shape[:2])
        latencies.append((time.perf_counter() - t0) * 1e3)
        frames += 1
    seconds = time.perf_counter() - start
    capture.release()
    print(json.dumps({
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else 0.0,
        # Nearest rank, as the Swift side reports them (numpy's default interpolates between two samples).
        "latency_p50_ms": float(np.percentile(latencies, 50, method="inverted_cdf")) if latencies else 0.0,
        "latency_p99_ms": float(np.percentile(latencies, 99, method="inverted_cdf")) if latencies else 0.0,
        "threads": args.threads,
        "model": args.model,
        "video": args.video,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
