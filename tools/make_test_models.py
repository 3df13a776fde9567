#!/usr/bin/env python3
"""Generate small synthetic YOLO ONNX models with known outputs, for YOLOSwap's tests.

Every valid model has input `images` float32 [1, 3, H, W] and output `output0` whose value is a constant baked into
the graph, made a function of the input so that onnxruntime cannot fold the graph away:

    output0 = ScatterND(zeros(shape), rows) + 0 * ReduceMean(images)        (NaN/Inf in the input leak through)

(yolov8 layouts scatter into [1, N, 4+nc] and Transpose to [1, 4+nc, N]). Only a few candidate rows are non-zero;
all values are exactly representable in float32 (multiples of 1/16 px, scores k/16), so decodes can be asserted
exactly. Metadata is Ultralytics-style: names (Python dict repr), stride, imgsz, task, batch, plus description,
author, version.

DIR/manifest.json (schema_version 1) lists every file:
  file, kind ("valid" | "broken" | "slow": valid output, slow Run), purpose,
  format ("yolov5" | "yolov8" | "yolov10" | null),
  input {name, shape, dtype} (symbolic dims as strings), output {name, shape} (null where there is none),
  imgsz [h, w], stride, nc, names [nc strings] (null where absent),
  raw {fill, rows: [{index, values}]}: the output, sparse: every entry is `fill` except the listed candidates;
      `values` is one candidate in the layout's own order: yolov5 cx,cy,w,h,obj,p[nc] (score = obj * p),
      yolov8 cx,cy,w,h,s[nc] (column `index` of [1, 4+nc, N]), yolov10 x1,y1,x2,y2,score,class;
  nan_rows [{index, columns}] (nan.onnx only: entries that are NaN, kept out of raw because JSON has no NaN),
  expected {conf, iou, max_det, detections, agnostic_detections}: what Ultralytics-style postprocessing yields
      (tools/reference.py semantics), each detection {row, class_id, class_name, confidence, box {x1,y1,x2,y2}}
      with the box in input pixels (= original pixels for an image of exactly the input size; scores descending),
  error: for broken models, what is wrong with them.

Usage: python tools/make_test_models.py --output models/synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # noqa: E402

OPSET = 17
IR_VERSION = 8
GENERATOR_VERSION = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COCO_NAMES_FILE = os.path.join(ROOT, ".cache", "setup", "darknet", "coco.names")
# Darknet's coco.names (the class names of the converted yolov3-tiny), used when the file is not there.
DARKNET_COCO = (
    "person bicycle car motorbike aeroplane bus train truck boat traffic_light fire_hydrant stop_sign "
    "parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie "
    "suitcase frisbee skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard "
    "tennis_racket bottle wine_glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot "
    "hot_dog pizza donut cake chair sofa pottedplant bed diningtable toilet tvmonitor laptop mouse remote "
    "keyboard cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush"
)


def coco_names() -> list[str]:
    if os.path.exists(COCO_NAMES_FILE):
        with open(COCO_NAMES_FILE, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        if len(names) == 80:
            return names
    return [n.replace("_", " ") for n in DARKNET_COCO.split()]


# MARK: - candidate rows


def v5_row(cx, cy, w, h, obj, cls: int, prob, nc: int, others: dict[int, float] | None = None) -> list[float]:
    probs = [0.0] * nc
    probs[cls] = prob
    for k, v in (others or {}).items():
        probs[k] = v
    return [cx, cy, w, h, obj, *probs]


def v8_row(cx, cy, w, h, cls: int, score, nc: int, others: dict[int, float] | None = None) -> list[float]:
    scores = [0.0] * nc
    scores[cls] = score
    for k, v in (others or {}).items():
        scores[k] = v
    return [cx, cy, w, h, *scores]


# MARK: - graph


def metadata(names: list[str] | None, imgsz: tuple[int, int], description: str) -> dict[str, str]:
    meta = {
        "description": description,
        "author": "YOLOSwap tools/make_test_models.py",
        "version": GENERATOR_VERSION,
        "task": "detect",
        "batch": "1",
        "stride": "32",
        "imgsz": str(list(imgsz)),
    }
    if names is not None:
        meta["names"] = str(dict(enumerate(names)))
    return meta


def constant_model(
    rows: dict[int, list[float]],
    n: int,
    width: int,
    layout: str,
    input_shape: list,
    output_shape: list,
    meta: dict[str, str],
    nan_cells: list[tuple[int, int]] = (),
) -> onnx.ModelProto:
    """output0 = scatter(rows) (+ Transpose for yolov8 / drop batch for rank 2) + 0 * ReduceMean(images)."""
    dense = np.zeros((1, n, width), np.float32)
    for i, values in rows.items():
        assert len(values) == width, (i, len(values), width)
        dense[0, i] = np.array(values, np.float32)
    for i, j in nan_cells:
        dense[0, i, j] = np.nan
    nz = sorted(set(np.nonzero(np.any(dense[0] != 0, axis=1) | np.any(np.isnan(dense[0]), axis=1))[0].tolist()))
    inits = [
        numpy_helper.from_array(np.array([1, n, width], np.int64), "shape"),
        numpy_helper.from_array(np.array([[0, i] for i in nz], np.int64).reshape(-1, 2), "row_indices"),
        numpy_helper.from_array(dense[0, nz].reshape(-1, width), "row_values"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["background"], name="background",
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("ScatterND", ["background", "row_indices", "row_values"], ["table"], name="table"),
        helper.make_node("ReduceMean", ["images"], ["input_mean"], name="input_mean", keepdims=0),
        helper.make_node("Mul", ["input_mean", "zero"], ["input_zero"], name="input_zero"),
    ]
    table = "table"
    if layout == "yolov8":
        nodes.append(helper.make_node("Transpose", ["table"], ["table_t"], name="table_t", perm=[0, 2, 1]))
        table = "table_t"
    elif layout == "rank2":
        inits.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
        nodes.append(helper.make_node("Squeeze", ["table", "axis0"], ["table_2d"], name="table_2d"))
        table = "table_2d"
    nodes.append(helper.make_node("Add", [table, "input_zero"], ["output0"], name="output0"))
    return finish(nodes, inits, input_shape, output_shape, meta)


def finish(nodes, inits, input_shape, output_shape, meta) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "synthetic_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, output_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="YOLOSwap make_test_models", producer_version=GENERATOR_VERSION)
    model.ir_version = IR_VERSION
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(model, full_check=True)
    return model


def float16_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with float16 input and output: Cast in front of the input and after the output."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for node in g.node:
        node.input[:] = ["images_f32" if i == "images" else i for i in node.input]
        node.output[:] = ["output0_f32" if o == "output0" else o for o in node.output]
    g.node.insert(0, helper.make_node("Cast", ["images"], ["images_f32"], name="input_to_f32", to=TensorProto.FLOAT))
    g.node.append(helper.make_node("Cast", ["output0_f32"], ["output0"], name="output_to_f16", to=TensorProto.FLOAT16))
    g.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    g.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(m, full_check=True)
    return m


def slow_model(rows, n, meta, size: int, depth: int) -> onnx.ModelProto:
    """A valid yolov5 80-class model whose Run is slow: `depth` chained [3S, 3S] MatMuls on the input."""
    model = constant_model(rows, n, 85, "yolov5", [1, 3, size, size], [1, n, 85], meta)
    g = model.graph
    side = 3 * size
    extra_inits = [
        numpy_helper.from_array(np.array([side, size], np.int64), "slow_shape"),
        numpy_helper.from_array(np.array(1.0 / size, np.float32), "slow_scale0"),
        # tanh(4 a^2) saturates near 1, so values never decay into (slow, input-dependent) denormals
        numpy_helper.from_array(np.array(4.0 / side, np.float32), "slow_scale"),
    ]
    extra = [
        helper.make_node("Reshape", ["images", "slow_shape"], ["slow_x"], name="slow_x"),
        helper.make_node("Transpose", ["slow_x"], ["slow_xt"], name="slow_xt", perm=[1, 0]),
        helper.make_node("MatMul", ["slow_x", "slow_xt"], ["slow_g"], name="slow_g"),
        helper.make_node("Mul", ["slow_g", "slow_scale0"], ["slow_gs"], name="slow_gs"),
        helper.make_node("Tanh", ["slow_gs"], ["slow_a0"], name="slow_a0"),
    ]
    last = "slow_a0"
    for k in range(1, depth + 1):
        extra += [
            helper.make_node("MatMul", [last, last], [f"slow_m{k}"], name=f"slow_m{k}"),
            helper.make_node("Mul", [f"slow_m{k}", "slow_scale"], [f"slow_s{k}"], name=f"slow_s{k}"),
            helper.make_node("Tanh", [f"slow_s{k}"], [f"slow_a{k}"], name=f"slow_a{k}"),
        ]
        last = f"slow_a{k}"
    extra += [
        helper.make_node("ReduceMean", [last], ["slow_mean"], name="slow_mean", keepdims=0),
        helper.make_node("Mul", ["slow_mean", "zero"], ["slow_zero"], name="slow_zero"),
    ]
    # output0 = table + (input_zero + slow_zero)
    nodes = list(g.node)
    out_node = nodes[-1]
    nodes = nodes[:-1] + extra + [
        helper.make_node("Add", ["input_zero", "slow_zero"], ["both_zero"], name="both_zero"),
        helper.make_node("Add", [out_node.input[0], "both_zero"], ["output0"], name="output0"),
    ]
    meta_d = {p.key: p.value for p in model.metadata_props}
    return finish(nodes, list(g.initializer) + extra_inits, [1, 3, size, size], [1, n, 85], meta_d)


# MARK: - model specifications


def rows_nc3() -> tuple[dict[int, list[float]], list[int], list[int]]:
    """yolov5 nc=3 candidates; returns (rows, kept rows class-aware, kept rows agnostic)."""
    nc = 3
    rows = {
        7: v5_row(64, 64, 64, 64, 1.0, 0, 0.875, nc),  # A: class 0, score .875 — kept
        100: v5_row(68, 64, 64, 64, 1.0, 0, 0.75, nc),  # same class as A, IoU .882 > .7 — suppressed
        101: v5_row(66, 66, 64, 64, 0.5, 1, 1.0, nc, {0: 0.25}),  # class 1 (.5) over A, IoU .88 — kept, not agnostic
        102: v5_row(96, 64, 64, 64, 1.0, 0, 0.5, nc),  # same class as A, IoU .333 — kept
        500: v5_row(192, 192, 48, 96, 0.75, 2, 0.875, nc),  # class 2, .65625 — kept
        501: v5_row(192, 64, 32, 32, 1.0, 1, 0.8125, nc, {0: 0.5, 2: 0.25}),  # multi-class row: class 1 .8125 — kept
        502: v5_row(244, 12, 40, 40, 1.0, 1, 0.5, nc),  # crosses the right/top edges (x2=264, y1=-8) — kept, clipped
        1000: v5_row(128, 128, 32, 32, 0.5, 0, 0.375, nc),  # .1875 < conf — dropped
        1001: v5_row(160, 160, 32, 32, 1.0, 2, 0.125, nc),  # high obj, low class prob .125 — dropped
        1002: v5_row(100, 200, 32, 32, 0.25, 1, 1.0, nc),  # score exactly .25 = conf (strict >) — dropped
        4031: v5_row(200, 230, 16, 16, 1.0, 2, 0.3125, nc),  # last row, .3125 — kept
    }
    return rows, [7, 501, 500, 101, 102, 502, 4031], [7, 501, 500, 102, 502, 4031]


def rows_nc5() -> tuple[dict[int, list[float]], list[int], list[int]]:
    nc = 5
    rows = {
        0: v8_row(80, 80, 80, 80, 0, 0.9375, nc),  # class 0 .9375 — kept
        1: v8_row(84, 80, 80, 80, 0, 0.875, nc),  # same class, IoU .905 — suppressed
        2: v8_row(80, 84, 80, 80, 3, 0.8125, nc),  # class 3 on top of row 0 — kept (not agnostic)
        17: v8_row(240, 160, 64, 128, 1, 0.75, nc, {2: 0.625}),  # multi-class: class 1 — kept
        1000: v8_row(160, 300, 96, 32, 4, 0.5, nc),  # crosses the bottom edge (y2=316 < 320) — kept
        1001: v8_row(310, 310, 40, 40, 2, 0.4375, nc),  # crosses right/bottom (330, 330) — kept, clipped
        1500: v8_row(40, 260, 20, 20, 1, 0.25, nc),  # exactly conf — dropped
        1501: v8_row(60, 260, 20, 20, 1, 0.1875, nc),  # below conf — dropped
        2099: v8_row(260, 40, 48, 48, 2, 0.28125, nc),  # last column, .28125 — kept
    }
    return rows, [0, 2, 17, 1000, 1001, 2099], [0, 17, 1000, 1001, 2099]


def rows_coco(size: int, n: int) -> tuple[dict[int, list[float]], list[int]]:
    """A person, a bus and a dog in units of size/32 px (exact for 320 and 416); a suppressed duplicate, a low score."""
    u = size // 32
    rows = {
        3: v5_row(16 * u, 16 * u, 8 * u, 20 * u, 1.0, 0, 0.875, 80),  # person .875 — kept
        4: v5_row(16.25 * u, 16 * u, 8 * u, 20 * u, 0.875, 0, 0.875, 80),  # duplicate person, IoU .94 — suppressed
        n // 2: v5_row(8 * u, 24 * u, 12 * u, 8 * u, 0.75, 5, 1.0, 80),  # bus .75 — kept
        n - 1: v5_row(24 * u, 8 * u, 5 * u, 4 * u, 1.0, 16, 0.5, 80),  # dog .5 — kept
        n - 2: v5_row(24 * u, 24 * u, 5 * u, 4 * u, 0.5, 2, 0.25, 80),  # car .125 — dropped
    }
    return rows, [3, n // 2, n - 1]


def v10_rows() -> tuple[dict[int, list[float]], list[int]]:
    rows = {
        0: [100, 120, 300, 400, 0.875, 0],  # person
        1: [102, 122, 298, 398, 0.75, 0],  # overlapping person: kept (end-to-end models do no NMS)
        2: [50, 60, 150, 160, 0.5, 16],  # dog
        3: [400, 300, 600, 500, 0.25, 2],  # exactly conf — dropped
        4: [10, 10, 20, 20, 0.125, 5],  # low — dropped
        5: [560, 580, 660, 650, 0.3125, 7],  # crosses right/bottom edge — kept, clipped
    }
    return rows, [0, 1, 2, 5]


# MARK: - generation


def expected(model: onnx.ModelProto, fmt: str, names: list[str], kept: list[int], agnostic_kept: list[int] | None,
             rows: dict[int, list[float]], imgsz: tuple[int, int]) -> dict:
    """Runs the model once and postprocesses with reference.py; asserts the hand-written kept rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    in_type = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
    out = session.run(None, {"images": np.full((1, 3, *imgsz), 0.5, in_type)})[0].astype(np.float32)
    result = {"conf": 0.25, "iou": 0.7, "max_det": 300}
    for key, agnostic, want in (("detections", False, kept), ("agnostic_detections", True, agnostic_kept)):
        if want is None:
            continue
        boxes, scores, classes = reference.postprocess(out, fmt, 0.25, 0.7, 300, agnostic)
        boxes = reference.scale_boxes(boxes, imgsz, imgsz)
        # map each detection back to its row by its (clipped) box and score
        dets = []
        for b, sc, c in zip(boxes, scores, classes):
            row = next(i for i in want if _matches(rows[i], fmt, b, sc, c, imgsz))
            dets.append({
                "row": row, "class_id": int(c), "class_name": names[int(c)], "confidence": float(sc),
                "box": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])},
            })
        got = [d["row"] for d in dets]
        if got != want:
            raise AssertionError(f"{key}: reference kept rows {got}, specification says {want}")
        result[key] = dets
    return result


def _matches(values, fmt, box, score, cls, imgsz) -> bool:
    v = np.array(values, np.float32)
    if fmt == "yolov10":
        xyxy, s, c = v[:4], v[4], int(v[5])
    else:
        xyxy = np.concatenate([v[:2] - v[2:4] / 2, v[:2] + v[2:4] / 2])
        probs = v[5:] * v[4] if fmt == "yolov5" else v[4:]
        c = int(probs.argmax())
        s = probs[c]
    xyxy = np.clip(xyxy, 0, [imgsz[1], imgsz[0], imgsz[1], imgsz[0]])
    return c == cls and abs(s - score) < 1e-6 and np.allclose(xyxy, box, atol=1e-4)


def sparse(rows: dict[int, list[float]]) -> dict:
    return {"fill": 0.0, "rows": [{"index": i, "values": [float(x) for x in rows[i]]} for i in sorted(rows)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate synthetic YOLO ONNX test models and manifest.json.")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--slow-depth", type=int, default=90, help="chained 1248x1248 MatMuls in slow.onnx (default 90)")
    args = ap.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    entries: list[dict] = []
    coco = coco_names()

    def save(file: str, model_or_bytes, entry: dict) -> None:
        data = model_or_bytes if isinstance(model_or_bytes, bytes) else model_or_bytes.SerializeToString()
        with open(os.path.join(args.output, file), "wb") as f:
            f.write(data)
        entries.append({"file": file, **entry})

    def valid(file, fmt, model, names, imgsz, in_shape, out_shape, rows, kept, agnostic_kept, purpose, kind="valid"):
        entry = {
            "kind": kind, "purpose": purpose, "format": fmt,
            "input": {"name": "images", "shape": in_shape, "dtype": "float32"},
            "output": {"name": "output0", "shape": out_shape},
            "imgsz": list(imgsz), "stride": 32, "nc": len(names), "names": names,
            "raw": sparse(rows),
            "expected": expected(model, fmt, names, kept, agnostic_kept, rows, imgsz),
        }
        save(file, model, entry)
        return model

    # yolov5 nc=3 256
    names3 = ["cat", "dog", "bird"]
    rows, kept, kept_ag = rows_nc3()
    n = 3 * (32 * 32 + 16 * 16 + 8 * 8)
    m = constant_model(rows, n, 8, "yolov5", [1, 3, 256, 256], [1, n, 8],
                       metadata(names3, (256, 256), "synthetic yolov5 nc=3 256x256, known boxes"))
    valid("yolov5-nc3-256.onnx", "yolov5", m, names3, (256, 256), [1, 3, 256, 256], [1, n, 8], rows, kept, kept_ag,
          "yolov5 layout decode: NMS same/different class, thresholds, multi-class row, clipping")

    # yolov8 nc=5 320 (static and dynamic)
    names5 = ["circle", "square", "triangle", "star", "hexagon"]
    rows, kept, kept_ag = rows_nc5()
    n = 2100
    m = constant_model(rows, n, 9, "yolov8", [1, 3, 320, 320], [1, 9, n],
                       metadata(names5, (320, 320), "synthetic yolov8 nc=5 320x320, known boxes"))
    valid("yolov8-nc5-320.onnx", "yolov8", m, names5, (320, 320), [1, 3, 320, 320], [1, 9, n], rows, kept, kept_ag,
          "yolov8 layout decode (transposed [1, 4+nc, N])")
    dyn_in, dyn_out = ["batch", 3, "height", "width"], ["batch", 9, "anchors"]
    m = constant_model(rows, n, 9, "yolov8", dyn_in, dyn_out,
                       metadata(names5, (320, 320), "synthetic yolov8 nc=5, dynamic input, metadata imgsz 320"))
    valid("yolov8-nc5-dynamic.onnx", "yolov8", m, names5, (320, 320), dyn_in, dyn_out, rows, kept, kept_ag,
          "dynamic input dims: size from metadata imgsz [320, 320]; output constant [1, 9, 2100] for any input")

    # yolov10 end-to-end
    rows, kept = v10_rows()
    m = constant_model(rows, 300, 6, "yolov10", [1, 3, 640, 640], [1, 300, 6],
                       metadata(coco, (640, 640), "synthetic yolov10 end-to-end [1, 300, 6], COCO names"))
    valid("yolov10-e2e-640.onnx", "yolov10", m, coco, (640, 640), [1, 3, 640, 640], [1, 300, 6], rows, kept, None,
          "end-to-end layout x1,y1,x2,y2,score,class: confidence filter only, no NMS")

    # identity stand-ins for the converted yolov3-tiny (same signature and names)
    identity = {}
    for size, n in ((416, 2535), (320, 1500)):
        rows, kept = rows_coco(size, n)
        m = constant_model(rows, n, 85, "yolov5", [1, 3, size, size], [1, n, 85],
                           metadata(coco, (size, size), f"synthetic stand-in for yolov3-tiny-coco-{size}"))
        identity[size] = (m, rows, n)
        valid(f"yolov5-nc80-{size}-identity.onnx", "yolov5", m, coco, (size, size), [1, 3, size, size], [1, n, 85],
              rows, kept, None, f"cheap model with the signature and class names of yolov3-tiny-coco-{size}.onnx")

    # float16 input and output (the path real fp16 exports take)
    m416, rows416, n416 = identity[416]
    valid("yolov5-nc80-416-fp16.onnx", "yolov5", float16_io(m416), coco, (416, 416), [1, 3, 416, 416],
          [1, n416, 85], rows416, rows_coco(416, 2535)[1], None,
          "yolov5-nc80-416-identity.onnx with float16 input and output tensors")
    entries[-1]["input"]["dtype"] = "float16"

    # class-set mismatches
    other = [f"thing{i}" for i in range(80)]
    rows, kept = rows_coco(320, 1500)
    m = constant_model(rows, 1500, 85, "yolov5", [1, 3, 320, 320], [1, 1500, 85],
                       metadata(other, (320, 320), "synthetic yolov5 nc=80 with non-COCO names"))
    valid("yolov5-nc80-320-other-names.onnx", "yolov5", m, other, (320, 320), [1, 3, 320, 320], [1, 1500, 85],
          rows, kept, None, "80 classes but different names than COCO: incompatible class set")
    names2 = ["person", "car"]
    rows = {0: v5_row(208, 208, 96, 256, 1.0, 0, 0.875, 2), 2534: v5_row(100, 300, 64, 32, 1.0, 1, 0.625, 2)}
    m = constant_model(rows, 2535, 7, "yolov5", [1, 3, 416, 416], [1, 2535, 7],
                       metadata(names2, (416, 416), "synthetic yolov5 nc=2 416"))
    valid("yolov5-nc2-416.onnx", "yolov5", m, names2, (416, 416), [1, 3, 416, 416], [1, 2535, 7], rows, [0, 2534],
          None, "class count mismatch (2 vs 80) with the same input size as yolov3-tiny-coco-416")

    # broken models
    def broken(file, model_or_bytes, error, purpose, fmt=None, out_shape=None, names=None, raw=None, **more):
        save(file, model_or_bytes, {
            "kind": "broken", "purpose": purpose, "format": fmt,
            "input": {"name": "images", "shape": [1, 3, 416, 416], "dtype": "float32"} if out_shape else None,
            "output": {"name": "output0", "shape": out_shape} if out_shape else None,
            "imgsz": [416, 416] if out_shape else None, "stride": 32 if out_shape else None,
            "nc": len(names) if names else None, "names": names, "raw": raw, **more, "error": error,
        })

    whole = identity[416][0].SerializeToString()
    broken("truncated.onnx", whole[: len(whole) // 2], "not loadable: first half of yolov5-nc80-416-identity.onnx",
           "load failure of a truncated file")
    rng = np.random.default_rng(1234)
    broken("not-onnx.onnx", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "not loadable: 4096 random bytes",
           "load failure of a file that is not ONNX")
    rows, _ = rows_coco(416, 2535)
    m = constant_model(rows, 2535, 85, "rank2", [1, 3, 416, 416], [2535, 85],
                       metadata(coco, (416, 416), "synthetic: output rank 2"))
    broken("wrong-rank.onnx", m, "output0 has rank 2 ([2535, 85]); YOLO outputs are rank 3",
           "signature validation: unsupported output rank", out_shape=[2535, 85], names=coco, raw=sparse(rows))
    nan_cells = [(10, j) for j in range(85)] + [(11, 0), (11, 1), (12, 4), (13, 5)]
    m = constant_model(rows, 2535, 85, "yolov5", [1, 3, 416, 416], [1, 2535, 85],
                       metadata(coco, (416, 416), "synthetic: NaN in output"), nan_cells)
    nan_rows = {}
    for i, j in nan_cells:
        nan_rows.setdefault(i, []).append(j)
    broken("nan.onnx", m, "output0 contains NaN (rows 10..13), the rest as yolov5-nc80-416-identity.onnx",
           "NaN handling / output validation", fmt="yolov5", out_shape=[1, 2535, 85], names=coco, raw=sparse(rows),
           nan_rows=[{"index": i, "columns": c} for i, c in sorted(nan_rows.items())])
    bad = dict(rows)
    bad[20] = v5_row(100, 100, 50, 50, 1.0, 3, 5.0, 80)
    bad[21] = v5_row(300, 300, 50, 50, 2.0, 7, 1.0, 80)
    m = constant_model(bad, 2535, 85, "yolov5", [1, 3, 416, 416], [1, 2535, 85],
                       metadata(coco, (416, 416), "synthetic: scores out of range"))
    broken("bad-scores.onnx", m, "class probability 5.0 (row 20) and objectness 2.0 (row 21): scores outside [0, 1]",
           "output validation: scores > 1", fmt="yolov5", out_shape=[1, 2535, 85], names=coco, raw=sparse(bad))
    m = slow_model(rows, 2535, metadata(coco, (416, 416), "synthetic: valid but deliberately slow"), 416,
                   args.slow_depth)
    valid("slow.onnx", "yolov5", m, coco, (416, 416), [1, 3, 416, 416], [1, 2535, 85], rows, [3, 2535 // 2, 2534],
          None, f"timeouts / slow-inference handling: output as yolov5-nc80-416-identity.onnx, but each Run does "
          f"{args.slow_depth + 1} chained 1248x1248 MatMuls on the input (~1.5 s on one core)", kind="slow")

    manifest = {"schema_version": 1, "generator": "tools/make_test_models.py", "opset": OPSET, "models": entries}
    with open(os.path.join(args.output, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, allow_nan=False)
        f.write("\n")

    print(f"{'file':36} {'kind':7} {'format':8} {'input':22} {'output':16} {'nc':>3} {'size':>8}")
    for e in entries:
        size = os.path.getsize(os.path.join(args.output, e["file"]))
        ins = "x".join(str(d) for d in e["input"]["shape"]) if e["input"] else "-"
        outs = "x".join(str(d) for d in e["output"]["shape"]) if e["output"] else "-"
        print(f"{e['file']:36} {e['kind']:7} {e['format'] or '-':8} {ins:22} {outs:16} {e['nc'] or '-':>3} {size:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
