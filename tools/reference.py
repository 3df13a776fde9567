#!/usr/bin/env python3
"""Independent reference YOLO pipeline in Python: the oracle YOLOSwap's Swift pipeline is tested against.

It re-implements, with numpy + OpenCV + onnxruntime only, what Ultralytics does at predict time, so that the Swift
decoder, letterbox, NMS and box scaling can be checked against numbers produced by a separate code path:

  decode       cv2.imread(path, IMREAD_COLOR): BGR uint8, EXIF orientation applied
  preprocess   ultralytics.data.augment.LetterBox(auto=False, center=True, scaleup=True):
                 r = min(H/h, W/w); new_unpad = (max(round(w*r), 1), max(round(h*r), 1));
                 dw, dh = (W-new_w)/2, (H-new_h)/2
                 cv2.resize(..., INTER_LINEAR) if the size changes;
                 top, bottom = round(dh-0.1), round(dh+0.1); left, right = round(dw-0.1), round(dw+0.1)
                 cv2.copyMakeBorder(..., BORDER_CONSTANT, 114)
               then BGR->RGB, HWC->NCHW, float32 / 255 (cast to float16 when the model input is float16)
  inference    onnxruntime CPU, one Run
  postprocess  output layout:
                 [1, N, 5+nc]  yolov5  (cx,cy,w,h, objectness, class probs; score = obj * prob)
                 [1, 4+nc, N]  yolov8  (cx,cy,w,h, class scores; transposed to [N, 4+nc])
                 [1, K, 6]     yolov10 end-to-end (x1,y1,x2,y2, score, class); confidence filter only, no NMS
               v5 vs v8 is decided with nc from the metadata names when present, else by the smaller dimension.
               NMS as ultralytics.utils.ops.non_max_suppression (single label per box): keep rows whose best class
               score > conf; xywh -> xyxy; boxes offset by class * 7680 unless --agnostic; greedy NMS with
               torchvision.ops.nms semantics (score-descending, stable on ties; suppress IoU > iou, strictly);
               at most 30000 candidates into NMS and --max-det out.
               ultralytics.utils.ops.scale_boxes (8.4.190): gain = min(H/h, W/w), new_w, new_h as the letterbox's,
                 pad = (round((W - new_w)/2 - 0.1), round((H - new_h)/2 - 0.1)); x: (x - pad_x) / (new_w / w),
                 y: (y - pad_y) / (new_h / h); clip to image.
  Input size: the model's static input dims, else metadata imgsz, else --imgsz (default 640).

Output, one JSON object per image and line (the schema of `yoloswap detect --format json`):
  {"image": {"path", "width", "height"}, "model": {"path", "format", "nc", "imgsz": [h, w]},
   "detections": [{"class_id", "class_name", "confidence", "box": {"x1", "y1", "x2", "y2"}}],
   "timings_ms": {"decode", "preprocess", "inference", "postprocess"}}

--bench N times each stage N times on the first image (after one warm-up) and prints one JSON object:
  {"model", "image", "runs", "threads" (0 = ORT's default), "imgsz",
   "decode", "preprocess", "inference", "postprocess", "end_to_end", "raw_run"}   (medians in ms; raw_run is
  session.run alone on a fixed, already preprocessed tensor).

Usage:
  python tools/reference.py --model models/yolov3-tiny-coco-416.onnx models/images/bus.jpg
  python tools/reference.py --model M --conf 0.25 --iou 0.7 --max-det 300 --bench 20 --threads 1 IMAGE
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np
import onnxruntime as ort

MAX_WH = 7680  # ultralytics: maximum box width/height, used as the per-class NMS offset
MAX_NMS = 30000  # ultralytics: maximum number of boxes into NMS


# MARK: - preprocessing


def letterbox(image: np.ndarray, new_shape: tuple[int, int]) -> np.ndarray:
    """Ultralytics LetterBox(auto=False, scaleup=True, center=True) on a BGR uint8 HWC image; new_shape is (h, w)."""
    shape = image.shape[:2]
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    new_unpad = (max(int(round(shape[1] * r)), 1), max(int(round(shape[0] * r)), 1))
    dw, dh = (new_shape[1] - new_unpad[0]) / 2, (new_shape[0] - new_unpad[1]) / 2
    if shape[::-1] != new_unpad:
        image = cv2.resize(image, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))


def to_tensor(letterboxed: np.ndarray, dtype=np.float32) -> np.ndarray:
    """BGR HWC uint8 -> RGB NCHW, / 255, as [1, 3, H, W] of dtype."""
    chw = np.ascontiguousarray(letterboxed[..., ::-1].transpose(2, 0, 1))
    x = chw.astype(np.float32) / np.float32(255.0)
    return x[None].astype(dtype)


def read_image(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot decode image {path}")
    return image


# MARK: - model


@dataclass
class ModelInfo:
    path: str
    imgsz: tuple[int, int]
    input_name: str
    input_dtype: type
    names: dict[int, str] | None
    end2end: bool


def open_model(path: str, threads: int | None, fallback_imgsz: int) -> tuple[ort.InferenceSession, ModelInfo]:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    names = None
    if "names" in meta:
        parsed = ast.literal_eval(meta["names"])
        names = {int(k): str(v) for k, v in (parsed.items() if isinstance(parsed, dict) else enumerate(parsed))}
    inp = session.get_inputs()[0]
    dims = inp.shape
    if len(dims) == 4 and isinstance(dims[2], int) and isinstance(dims[3], int) and dims[2] > 0 and dims[3] > 0:
        imgsz = (dims[2], dims[3])
    elif "imgsz" in meta:
        value = ast.literal_eval(meta["imgsz"])
        imgsz = (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))
    else:
        imgsz = (fallback_imgsz, fallback_imgsz)
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    end2end = meta.get("end2end", "").lower() == "true"
    return session, ModelInfo(path, imgsz, inp.name, dtype, names, end2end)


def detect_format(shape: tuple[int, ...], nc: int | None, end2end: bool) -> str:
    """Names the output layout of a [1, a, b] output: yolov5, yolov8 or yolov10."""
    if len(shape) != 3 or shape[0] != 1:
        raise ValueError(f"unsupported output shape {list(shape)}: expected [1, a, b]")
    _, a, b = shape
    if end2end and b == 6:
        return "yolov10"
    if nc is not None:
        if a == 4 + nc and b != 5 + nc:
            return "yolov8"
        if b == 5 + nc and a != 4 + nc:
            return "yolov5"
        if b == 6:
            return "yolov10"
        raise ValueError(f"output shape {list(shape)} does not fit nc={nc} in any known layout")
    if a < b:
        return "yolov8"
    return "yolov10" if b == 6 else "yolov5"


# MARK: - postprocessing


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """torchvision.ops.nms semantics on float32 xyxy boxes: returns kept indices, by descending score."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    suppressed = np.zeros(len(boxes), dtype=bool)
    keep = []
    for position, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[position + 1 :]
        rest = rest[~suppressed[rest]]
        if rest.size == 0:
            continue
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_thres]] = True
    return np.array(keep, dtype=np.int64)


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    xy, wh = x[:, :2], x[:, 2:4] / np.float32(2)
    return np.concatenate([xy - wh, xy + wh], axis=1)


def postprocess(
    output: np.ndarray, fmt: str, conf: float, iou: float, max_det: int, agnostic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (boxes xyxy in letterbox pixels [K,4], scores [K], classes [K]) after filtering and NMS."""
    pred = output[0].astype(np.float32)
    if fmt == "yolov10":
        pred = pred[pred[:, 4] > conf][:max_det]
        return pred[:, :4], pred[:, 4], pred[:, 5].astype(np.int64)
    if fmt == "yolov8":
        pred = pred.T
        boxes, cls = pred[:, :4], pred[:, 4:]
    else:
        boxes, cls = pred[:, :4], pred[:, 5:] * pred[:, 4:5]
    best = cls.max(axis=1) if cls.shape[1] else np.zeros(len(cls), np.float32)
    candidates = best > conf
    boxes, cls = boxes[candidates], cls[candidates]
    if not len(boxes):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    boxes = xywh2xyxy(boxes)
    classes = cls.argmax(axis=1)
    scores = cls[np.arange(len(cls)), classes]
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    offset = np.zeros((len(boxes), 1), np.float32) if agnostic else (classes[:, None] * MAX_WH).astype(np.float32)
    keep = nms(boxes + offset, scores, iou)[:max_det]
    return boxes[keep], scores[keep], classes[keep].astype(np.int64)


def scale_boxes(boxes: np.ndarray, letterbox_shape: tuple[int, int], image_shape: tuple[int, int]) -> np.ndarray:
    """ultralytics.utils.ops.scale_boxes: letterbox pixels -> original image pixels, clipped. Shapes are (h, w)."""
    h1, w1 = letterbox_shape
    h0, w0 = image_shape
    gain = min(h1 / h0, w1 / w0)
    new_h, new_w = (max(round(x * gain), 1) for x in (h0, w0))
    pad_x = round((w1 - new_w) / 2 - 0.1)
    pad_y = round((h1 - new_h) / 2 - 0.1)
    out = boxes.astype(np.float32).copy()
    out[:, [0, 2]] -= pad_x
    out[:, [1, 3]] -= pad_y
    out[:, [0, 2]] /= np.float32(new_w / w0)
    out[:, [1, 3]] /= np.float32(new_h / h0)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w0)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h0)
    return out


# MARK: - pipeline


def run_image(session: ort.InferenceSession, info: ModelInfo, path: str, args) -> dict:
    t0 = time.perf_counter()
    image = read_image(path)
    t1 = time.perf_counter()
    tensor = to_tensor(letterbox(image, info.imgsz), info.input_dtype)
    t2 = time.perf_counter()
    output = session.run(None, {info.input_name: tensor})[0]
    t3 = time.perf_counter()
    nc_meta = len(info.names) if info.names else None
    fmt = detect_format(output.shape, nc_meta, info.end2end)
    boxes, scores, classes = postprocess(output, fmt, args.conf, args.iou, args.max_det, args.agnostic)
    boxes = scale_boxes(boxes, info.imgsz, image.shape[:2])
    t4 = time.perf_counter()
    if fmt == "yolov5":
        nc = output.shape[2] - 5
    elif fmt == "yolov8":
        nc = output.shape[1] - 4
    else:
        nc = nc_meta if nc_meta is not None else int(classes.max()) + 1 if len(classes) else 0
    names = info.names or {}
    detections = [
        {
            "class_id": int(c),
            "class_name": names.get(int(c), str(int(c))),
            "confidence": float(s),
            "box": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])},
        }
        for b, s, c in zip(boxes, scores, classes)
    ]
    return {
        "image": {"path": path, "width": int(image.shape[1]), "height": int(image.shape[0])},
        "model": {"path": info.path, "format": fmt, "nc": int(nc), "imgsz": list(info.imgsz)},
        "detections": detections,
        "timings_ms": {
            "decode": (t1 - t0) * 1e3,
            "preprocess": (t2 - t1) * 1e3,
            "inference": (t3 - t2) * 1e3,
            "postprocess": (t4 - t3) * 1e3,
        },
    }


def bench(session: ort.InferenceSession, info: ModelInfo, path: str, runs: int, args) -> dict:
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "inference", "postprocess")}
    end_to_end, raw = [], []
    run_image(session, info, path, args)  # warm-up
    for _ in range(runs):
        t0 = time.perf_counter()
        result = run_image(session, info, path, args)
        end_to_end.append((time.perf_counter() - t0) * 1e3)
        for key, value in result["timings_ms"].items():
            stages[key].append(value)
    fixed = to_tensor(letterbox(read_image(path), info.imgsz), info.input_dtype)
    session.run(None, {info.input_name: fixed})
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {info.input_name: fixed})
        raw.append((time.perf_counter() - t0) * 1e3)
    out = {k: statistics.median(v) for k, v in stages.items()}
    out["end_to_end"] = statistics.median(end_to_end)
    out["raw_run"] = statistics.median(raw)
    return {"model": info.path, "image": path, "runs": runs, "threads": args.threads or 0, "imgsz": list(info.imgsz),
            **out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Independent reference YOLO pipeline (Ultralytics semantics).")
    ap.add_argument("--model", required=True, help="ONNX model")
    ap.add_argument("--conf", type=float, default=0.25, help="confidence threshold (strict >; default 0.25)")
    ap.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (suppress IoU > iou; default 0.7)")
    ap.add_argument("--max-det", type=int, default=300, help="maximum detections per image (default 300)")
    ap.add_argument("--imgsz", type=int, default=640, help="input size when neither the model nor metadata say")
    ap.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra_op_num_threads (default: ORT's)")
    ap.add_argument("--bench", type=int, default=0, metavar="N", help="time N runs on the first image")
    ap.add_argument("images", nargs="+", help="image files")
    args = ap.parse_args(argv)

    session, info = open_model(args.model, args.threads, args.imgsz)
    if args.bench:
        print(json.dumps(bench(session, info, args.images[0], args.bench, args)))
        return 0
    for path in args.images:
        print(json.dumps(run_image(session, info, path, args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
