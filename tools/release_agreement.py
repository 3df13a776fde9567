#!/usr/bin/env python3
"""Re-compute a shadow release's agreement figures in Python, independently of YOLOSwap's Swift code.

Both models run with onnxruntime through tools/reference.py's pipeline (Ultralytics semantics) on the same images;
the detections are then matched as YOLOSwap's `PairComparison` documents it:

  per class (by class name), the candidate's detections in descending confidence (ties: in order) each take the
  still unmatched baseline detection of that class with the highest IoU (ties: the first), if IoU >= --iou-match.

Figures over all images (what `GET /v1/slots/{slot}/release` reports under "agreement"):
  precision = matched / candidate detections, recall = matched / baseline detections (1 when both counts are 0),
  f1, mean_iou and mean_abs_confidence_delta over matched pairs, mean_count_delta = (candidate - baseline) / images,
  disagreeing = images where some detection found no match.

--pairs FILE reads JSON lines {"baseline": [detections], "candidate": [detections]} instead of running models.

Usage:
  .venv/bin/python tools/release_agreement.py --baseline models/yolov3-tiny-coco-416.onnx \
      --candidate models/yolov3-tiny-coco-320.onnx models/images/*.jpg
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def iou(a: dict, b: dict) -> float:
    iw = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    ih = max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    inter = iw * ih
    area = lambda r: max(0.0, r["x2"] - r["x1"]) * max(0.0, r["y2"] - r["y1"])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def compare(baseline: list[dict], candidate: list[dict], threshold: float) -> dict:
    used = [False] * len(baseline)
    order = sorted(range(len(candidate)), key=lambda i: (-candidate[i]["confidence"], i))
    matched, iou_sum, delta_sum = 0, 0.0, 0.0
    for c in order:
        best, best_iou = -1, threshold
        for b in range(len(baseline)):
            if used[b] or baseline[b]["class_name"] != candidate[c]["class_name"]:
                continue
            v = iou(baseline[b]["box"], candidate[c]["box"])
            if v >= best_iou and (best < 0 or v > best_iou):
                best, best_iou = b, v
        if best >= 0:
            used[best] = True
            matched += 1
            iou_sum += best_iou
            delta_sum += abs(baseline[best]["confidence"] - candidate[c]["confidence"])
    return {"matched": matched, "baseline": len(baseline), "candidate": len(candidate), "iou_sum": iou_sum,
            "delta_sum": delta_sum}


def summarize(pairs: list[dict]) -> dict:
    m = sum(p["matched"] for p in pairs)
    b = sum(p["baseline"] for p in pairs)
    c = sum(p["candidate"] for p in pairs)
    precision = m / c if c else (1.0 if b == 0 else 0.0)
    recall = m / b if b else (1.0 if c == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "pairs": len(pairs),
        "disagreeing": sum(1 for p in pairs if not (p["matched"] == p["baseline"] == p["candidate"])),
        "baseline_detections": b, "candidate_detections": c, "matched": m,
        "precision": precision, "recall": recall, "f1": f1,
        "mean_iou": sum(p["iou_sum"] for p in pairs) / m if m else None,
        "mean_abs_confidence_delta": sum(p["delta_sum"] for p in pairs) / m if m else None,
        "mean_count_delta": (c - b) / len(pairs) if pairs else None,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", help="baseline ONNX model")
    ap.add_argument("--candidate", help="candidate ONNX model")
    ap.add_argument("--iou-match", type=float, default=0.5, help="IoU at which detections match (default 0.5)")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--pairs", help="JSON lines of detection-set pairs instead of models")
    ap.add_argument("images", nargs="*")
    args = ap.parse_args(argv)

    sets: list[tuple[list[dict], list[dict]]] = []
    if args.pairs:
        with open(args.pairs) as f:
            sets = [(o["baseline"], o["candidate"]) for o in map(json.loads, filter(str.strip, f))]
    else:
        from reference import open_model, run_image  # noqa: E402  (onnxruntime, cv2)

        ns = argparse.Namespace(conf=args.conf, iou=0.7, max_det=300, agnostic=False)
        base_session, base_info = open_model(args.baseline, 1, 640)
        cand_session, cand_info = open_model(args.candidate, 1, 640)
        for path in args.images:
            sets.append((run_image(base_session, base_info, path, ns)["detections"],
                         run_image(cand_session, cand_info, path, ns)["detections"]))
    print(json.dumps(summarize([compare(b, c, args.iou_match) for b, c in sets]), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
