#!/usr/bin/env python3
"""pycocotools' COCOeval on a ground truth and a detections file — the reference the Swift evaluator
(Sources/Evaluation) is checked against by Tests/EvaluationTests.

    tools/coco_eval.py GROUND_TRUTH.json DETECTIONS.json

Prints one JSON object: `stats` (COCOeval.summarize()'s twelve numbers, -1 where undefined) and `per_category`
({category id: [AP@[.5:.95], AP@.5]}, the mean of the precision array over IoU thresholds and recall points at area
"all" and 100 detections; null where the category has no ground truth).
"""
import contextlib
import io
import json
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def main(gt_path, dt_path):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt = COCO(gt_path)
        gt.dataset.setdefault("info", {})  # loadRes copies it; the format does not require it
        detections = json.load(open(dt_path))
        # loadRes refuses an empty list; COCOeval on an empty result set is then a COCO with no annotations.
        dt = gt.loadRes(detections) if detections else COCO()
        if not detections:
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        e = COCOeval(gt, dt, "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    precision = e.eval["precision"]  # T x R x K x A x M
    per_category = {}
    for k, category in enumerate(e.params.catIds):
        p = precision[:, :, k, 0, -1]
        per_category[str(category)] = None if (p == -1).any() else [float(np.mean(p)), float(np.mean(p[0]))]
    print(json.dumps({"stats": [float(s) for s in e.stats], "per_category": per_category}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
