#!/usr/bin/env python3
"""Check tools/darknet2onnx.py against OpenCV's own Darknet reader (cv2.dnn.readNetFromDarknet).

Both networks get the same float tensor (letterboxed photos as tools/reference.py makes them, plus a uniform random
tensor), and every decoded value is compared.

What OpenCV's Darknet importer returns (cv2 4.14, one 'Region' output per [yolo] layer, in cfg order):
  shape [H*W*A, 5+nc], rows CELL-major: row = (y*W + x)*A + a  (our output0 is anchor-major: (a*H + y)*W + x)
  x, y, w, h   normalized by the network input size (cx/S, cy/S, w/S, h/S)
  col 4        objectness (sigmoid)
  cols 5..     objectness * class probability, set to 0 where not > the [yolo] layer's `thresh` (default 0.2)
So the check maps our rows to OpenCV's order, divides boxes by S and multiplies class probabilities by
objectness. To compare every class score (not only those above 0.2) it also loads the cfg with `thresh=0` in each
[yolo] section; the unmodified cfg is compared with the same gate applied to our scores (entries within the
tolerance of the gate are left out, as a float rounding could put them on either side).
Class probabilities themselves are compared on rows whose objectness is > 0.01 (score / objectness).

Exit status 0 when every max abs diff is <= --tol (default 1e-4), 1 otherwise (with a report).

Usage:
  python tools/check_converter.py [--cfg C --weights W --names N] [--imgsz 416 320 608] [--onnx M] [--images ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import cv2
import numpy as np
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import darknet2onnx  # noqa: E402
from reference import letterbox, read_image, to_tensor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DK = os.path.join(ROOT, ".cache", "setup", "darknet")
IMAGES = os.path.join(ROOT, "models", "images")


def yolo_sections(cfg_text: str) -> list[darknet2onnx.Section]:
    return [s for s in darknet2onnx.parse_cfg(cfg_text) if s.type == "yolo"]


def to_opencv_layout(ours: np.ndarray, heads: list[tuple[int, int, int]], size: int) -> list[np.ndarray]:
    """Our [N, 5+nc] rows -> per-head OpenCV-style arrays: cell-major rows, normalized boxes, obj*prob scores."""
    result, offset = [], 0
    for a, h, w in heads:
        rows = ours[offset : offset + a * h * w]
        offset += a * h * w
        rows = rows.reshape(a, h, w, -1).transpose(1, 2, 0, 3).reshape(h * w * a, -1).copy()
        rows[:, :4] /= np.float32(size)
        rows[:, 5:] *= rows[:, 4:5]
        result.append(rows)
    if offset != len(ours):
        raise AssertionError(f"row count mismatch: heads cover {offset}, output has {len(ours)}")
    return result


def compare(name: str, ours: list[np.ndarray], theirs: list[np.ndarray], gate: float | None, tol: float) -> dict:
    """Max abs diffs of boxes / objectness / scores (/ class probs) over all heads."""
    diffs = {"xy": 0.0, "wh": 0.0, "obj": 0.0, "score": 0.0, "prob": 0.0}
    skipped = 0
    above = 0
    for o, t in zip(ours, theirs):
        if o.shape != t.shape:
            raise AssertionError(f"{name}: shape {o.shape} vs OpenCV {t.shape}")
        diffs["xy"] = max(diffs["xy"], float(np.abs(o[:, 0:2] - t[:, 0:2]).max()))
        diffs["wh"] = max(diffs["wh"], float(np.abs(o[:, 2:4] - t[:, 2:4]).max()))
        diffs["obj"] = max(diffs["obj"], float(np.abs(o[:, 4] - t[:, 4]).max()))
        scores = o[:, 5:]
        if gate is not None:
            near = np.abs(scores - gate) <= tol
            skipped += int(near.sum())
            scores = np.where(scores > gate, scores, 0)
            d = np.where(near, 0, np.abs(scores - t[:, 5:]))
        else:
            d = np.abs(scores - t[:, 5:])
        above += int((t[:, 5:] > 0.2).sum())
        diffs["score"] = max(diffs["score"], float(d.max()))
        if gate is None:
            rows = t[:, 4] > 0.01
            if rows.any():
                p_ours = o[rows, 5:] / o[rows, 4:5]
                p_theirs = t[rows, 5:] / t[rows, 4:5]
                diffs["prob"] = max(diffs["prob"], float(np.abs(p_ours - p_theirs).max()))
    ok = all(v <= tol for v in diffs.values())
    detail = ", ".join(f"{k} {v:.2e}" for k, v in diffs.items() if not (gate is not None and k == "prob"))
    extra = f", {skipped} entries at the gate skipped" if gate is not None else ""
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: max abs diff {detail} ({above} scores > 0.2{extra})")
    return {"ok": ok, **diffs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compare darknet2onnx output with OpenCV's Darknet importer.")
    ap.add_argument("--cfg", default=os.path.join(DK, "yolov3-tiny.cfg"))
    ap.add_argument("--weights", default=os.path.join(DK, "yolov3-tiny.weights"))
    ap.add_argument("--names", default=os.path.join(DK, "coco.names"))
    ap.add_argument("--imgsz", type=int, nargs="+", default=[416, 320], help="input sizes to check (default 416 320)")
    ap.add_argument("--onnx", default=None, help="check this converted model (its own input size) instead of "
                    "converting in-process")
    ap.add_argument("--images", nargs="+", default=[os.path.join(IMAGES, n) for n in ("bus.jpg", "dog.jpg")])
    ap.add_argument("--random", type=int, default=1, help="number of uniform random tensors (default 1)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args(argv)

    with open(args.cfg, encoding="utf-8") as f:
        cfg_text = f.read()
    with open(args.weights, "rb") as f:
        weights = f.read()
    names = darknet2onnx.read_names(args.names)
    yolos = yolo_sections(cfg_text)
    gate = yolos[0].number("thresh", 0.2)

    # OpenCV twice: as shipped (scores gated at `thresh`) and with thresh=0 (every score visible).
    net_gated = cv2.dnn.readNetFromDarknet(args.cfg, args.weights)
    with tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False) as tmp:
        tmp.write("\n".join(
            line + ("\nthresh=0" if line.strip().lower() == "[yolo]" else "")
            for line in cfg_text.splitlines()
            if not line.strip().lower().startswith("thresh")
        ))
    try:
        net_full = cv2.dnn.readNetFromDarknet(tmp.name, args.weights)
    finally:
        os.unlink(tmp.name)

    if args.onnx:
        sessions = [(args.onnx, ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"]))]
        sessions = [(p, s, s.get_inputs()[0].shape[2]) for p, s in sessions]
    else:
        sessions = []
        for size in args.imgsz:
            model, _ = darknet2onnx.convert(cfg_text, weights, names, size)
            sessions.append((f"converted in-process at {size}",
                             ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]), size))

    rng = np.random.default_rng(20240601)
    worst: dict[str, float] = {}
    failures = 0
    for label, session, size in sessions:
        print(f"{label} (input {size}x{size}), OpenCV {cv2.__version__}:")
        inputs = [(os.path.basename(p), to_tensor(letterbox(read_image(p), (size, size)))) for p in args.images]
        inputs += [(f"random#{i}", rng.random((1, 3, size, size), dtype=np.float32)) for i in range(args.random)]
        for name, x in inputs:
            ours = session.run(None, {"images": x})[0][0]
            # [yolo] heads in cfg order; their grids follow from the row counts (strides 32, 16, 8, ...)
            results = {}
            for tag, net, g in (("full", net_full, None), ("gated", net_gated, gate)):
                net.setInput(x)
                theirs = net.forward(net.getUnconnectedOutLayersNames())
                heads = []
                for sec, t in zip(yolos, theirs):
                    a = len(sec.integers("mask", list(range(len(sec.numbers("anchors")) // 2))))
                    cells = t.shape[0] // a
                    side = int(round(cells ** 0.5))
                    heads.append((a, side, side))
                results[tag] = compare(f"{name} [{tag}{'' if g is None else f' @ {g}'}]",
                                       to_opencv_layout(ours, heads, size), theirs, g, args.tol)
            for r in results.values():
                failures += 0 if r["ok"] else 1
                for k, v in r.items():
                    if k != "ok":
                        worst[k] = max(worst.get(k, 0.0), v)
    summary = ", ".join(f"{k} {v:.2e}" for k, v in worst.items())
    if failures:
        print(f"check_converter: FAILED ({failures} comparisons over tolerance {args.tol}); worst: {summary}")
        return 1
    print(f"check_converter: OK, all within {args.tol}; worst max abs diffs: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
