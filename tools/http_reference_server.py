#!/usr/bin/env python3
"""The minimal Python HTTP detection server a user would otherwise write: the baseline of scripts/bench-http.

http.server's ThreadingHTTPServer (a thread per connection, HTTP/1.1 keep-alive), one onnxruntime session shared by
all threads (session.run releases the GIL), cv2 to decode, and tools/reference.py's letterbox, output decoding, NMS
and box scaling (the same Ultralytics semantics YOLOSwap implements).

  POST /v1/detect   body: the raw image (JPEG or PNG)  ->  200 {"image": {"width", "height"}, "detections": [...],
                    "timings_ms": {...}}; 400 when the body is not an image
  GET  /healthz     200 {"status": "ok"}

Usage:
  .venv/bin/python tools/http_reference_server.py --model models/yolov3-tiny-coco-416.onnx --port 8081 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402  (tools/reference.py: letterbox, to_tensor, open_model, postprocess, scale_boxes)

MAX_BODY = 20 << 20


class Detector:
    """One ORT session and the reference pre/post-processing; safe to call from several threads at once."""

    def __init__(self, model: str, threads: int, conf: float, iou: float, max_det: int):
        self.session, self.info = reference.open_model(model, threads, 640)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.nc_meta = len(self.info.names) if self.info.names else None

    def detect(self, body: bytes) -> dict:
        t0 = time.perf_counter()
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("the body is not a decodable image")
        t1 = time.perf_counter()
        tensor = reference.to_tensor(reference.letterbox(image, self.info.imgsz), self.info.input_dtype)
        t2 = time.perf_counter()
        output = self.session.run(None, {self.info.input_name: tensor})[0]
        t3 = time.perf_counter()
        fmt = reference.detect_format(output.shape, self.nc_meta, self.info.end2end)
        boxes, scores, classes = reference.postprocess(output, fmt, self.conf, self.iou, self.max_det, False)
        boxes = reference.scale_boxes(boxes, self.info.imgsz, image.shape[:2])
        t4 = time.perf_counter()
        names = self.info.names or {}
        return {
            "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "detections": [
                {
                    "class_id": int(c),
                    "class_name": names.get(int(c), str(int(c))),
                    "confidence": float(s),
                    "box": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])},
                }
                for b, s, c in zip(boxes, scores, classes)
            ],
            "timings_ms": {
                "decode": (t1 - t0) * 1e3,
                "preprocess": (t2 - t1) * 1e3,
                "inference": (t3 - t2) * 1e3,
                "postprocess": (t4 - t3) * 1e3,
            },
        }


def make_handler(detector: Detector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as any HTTP client expects

        def send_json(self, status: int, value: dict) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/healthz":
                self.send_json(200, {"status": "ok"})
            else:
                self.send_json(404, {"detail": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.close_connection = True
                self.send_json(413, {"detail": "body over the limit"})
                return
            body = self.rfile.read(length)
            if self.path.split("?", 1)[0] != "/v1/detect":
                self.send_json(404, {"detail": f"no route {self.path}"})
                return
            try:
                result = detector.detect(body)
            except ValueError as error:
                self.send_json(400, {"detail": str(error)})
                return
            self.send_json(200, result)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (quiet: one line per request costs time)
            pass

    return Handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Minimal Python HTTP YOLO detection server (benchmark baseline).")
    ap.add_argument("--model", required=True, help="ONNX model")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8081, help="listen port (default 8081)")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra_op_num_threads (default 1)")
    ap.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    ap.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    ap.add_argument("--max-det", type=int, default=300, help="maximum detections per image (default 300)")
    args = ap.parse_args(argv)

    detector = Detector(args.model, args.threads, args.conf, args.iou, args.max_det)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(detector))
    server.daemon_threads = True
    print(f"http_reference_server serving {args.model} on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
