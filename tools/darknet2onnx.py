#!/usr/bin/env python3
"""Convert a Darknet YOLO model (.cfg + .weights) to ONNX with a YOLOv5-style decoded output.

Uses numpy and onnx only (no torch, no darknet). Written for yolov3-tiny; also handles the layer types the
other classic Darknet YOLOs use ([convolutional], [maxpool], [upsample], [route] with groups, [shortcut], [yolo]).

Graph contract (what YOLOSwap's Swift side expects):

  input   images   float32 [1, 3, S, S]   RGB, values 0..1, NCHW, letterboxed to S x S
  output  output0  float32 [1, N, 5 + nc] YOLOv5 layout, already decoded:
          cx, cy, w, h        box centre and size in input pixels (0..S)
          objectness          sigmoid
          class_prob[nc]      sigmoid, NOT multiplied by objectness (score = objectness * class_prob)

Decoding per [yolo] layer (grid H x W, stride = S / W, anchors from the cfg in network-input pixels and kept
unchanged when --imgsz differs from the cfg's width/height, as Darknet does when it resizes a network):

  cx = (sigmoid(tx) * scale_x_y - (scale_x_y - 1) / 2 + grid_x) * stride_x      (scale_x_y defaults to 1)
  cy = (sigmoid(ty) * scale_x_y - (scale_x_y - 1) / 2 + grid_y) * stride_y
  w  = exp(tw) * anchor_w,  h = exp(th) * anchor_h

Row order of output0: [yolo] layers in cfg order; within one layer anchor-major, then row (y), then column (x):
row = offset_of_layer + (a * H + y) * W + x, for a over the layer's mask. This is the order of Darknet's own
output buffer (l.output is [anchor][entry][y][x]) and of Ultralytics YOLOv5's exported Detect head. (OpenCV's
Darknet importer orders its rows cell-major instead: (y * W + x) * A + a; see tools/check_converter.py.)

Batch norm is folded into the convolution exactly as Darknet's forward pass normalizes
(blas.c normalize_cpu: (x - mean) / (sqrt(var) + .000001f)), so
  w' = w * scale / (sqrt(var) + 1e-6),   b' = bias - mean * scale / (sqrt(var) + 1e-6).

[maxpool] follows Darknet: padding defaults to size - 1, the window starts at -(padding / 2) (C integer
division), out = (in + padding - size) / stride + 1; a size-2 stride-1 pool therefore pads only right/bottom
(ONNX pads [0, 0, 1, 1]).

Metadata (onnx metadata_props, Ultralytics style): names (Python dict repr), stride, imgsz, task, batch,
description, author, version, source (sha256 of the .weights file), format.

Usage:
  python tools/darknet2onnx.py --cfg yolov3-tiny.cfg --weights yolov3-tiny.weights --names coco.names \
      --imgsz 416 --output models/yolov3-tiny-coco-416.onnx

The output is byte-for-byte deterministic for the same inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CONVERTER_VERSION = "1.0"
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; loadable by every onnxruntime since 1.11


# MARK: - cfg parsing


@dataclass
class Section:
    """One [type] block of a Darknet cfg, in file order, with its raw key=value options."""

    type: str
    options: dict[str, str] = field(default_factory=dict)
    line: int = 0

    def integer(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise ValueError(f"[{self.type}] at line {self.line}: missing required option '{key}'")
            return default
        return int(self.options[key])

    def number(self, key: str, default: float) -> float:
        return float(self.options[key]) if key in self.options else default

    def text(self, key: str, default: str) -> str:
        return self.options.get(key, default)

    def integers(self, key: str, default: list[int] | None = None) -> list[int]:
        if key not in self.options:
            if default is None:
                raise ValueError(f"[{self.type}] at line {self.line}: missing required option '{key}'")
            return default
        return [int(v) for v in self.options[key].split(",") if v.strip()]

    def numbers(self, key: str) -> list[float]:
        return [float(v) for v in self.options[key].split(",") if v.strip()]


def parse_cfg(text: str) -> list[Section]:
    """Parses a Darknet cfg: '[section]' headers (repeatable), 'key = value' lines, '#'/';' comments."""
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"cfg line {number}: malformed section header {raw!r}")
            sections.append(Section(type=line[1:-1].strip().lower(), line=number))
            continue
        if "=" not in line:
            raise ValueError(f"cfg line {number}: expected key=value, got {raw!r}")
        if not sections:
            raise ValueError(f"cfg line {number}: option before the first [section]")
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = value.strip()
    if not sections or sections[0].type not in ("net", "network"):
        raise ValueError("cfg must start with a [net] section")
    return sections


# MARK: - weights reading


class WeightsReader:
    """Reads a Darknet .weights file: header, then float32 parameters consumed layer by layer."""

    def __init__(self, data: bytes):
        if len(data) < 16:
            raise ValueError(f"weights file too short ({len(data)} bytes)")
        major, minor, revision = np.frombuffer(data, dtype="<i4", count=3)
        self.version = (int(major), int(minor), int(revision))
        if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
            self.seen = int(np.frombuffer(data, dtype="<i8", count=1, offset=12)[0])
            offset = 20
        else:
            self.seen = int(np.frombuffer(data, dtype="<i4", count=1, offset=12)[0])
            offset = 16
        if (len(data) - offset) % 4:
            raise ValueError("weights payload is not a whole number of float32 values")
        self.values = np.frombuffer(data, dtype="<f4", offset=offset)
        self.position = 0

    def take(self, count: int, what: str) -> np.ndarray:
        end = self.position + count
        if end > self.values.size:
            raise ValueError(
                f"weights file ends early while reading {what}: need {count} floats at {self.position}, "
                f"only {self.values.size - self.position} left (cfg and weights do not match)"
            )
        out = self.values[self.position : end].astype(np.float32)
        self.position = end
        return out

    @property
    def remaining(self) -> int:
        return self.values.size - self.position


# MARK: - graph building


class GraphBuilder:
    """Accumulates ONNX nodes and initializers with deterministic, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        output = name
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attrs))
        return output


def activation(g: GraphBuilder, kind: str, x: str, prefix: str) -> str:
    if kind == "linear":
        return x
    if kind == "leaky":
        return g.node("LeakyRelu", [x], f"{prefix}_leaky", alpha=0.1)
    if kind == "relu":
        return g.node("Relu", [x], f"{prefix}_relu")
    if kind == "logistic":
        return g.node("Sigmoid", [x], f"{prefix}_sigmoid")
    if kind in ("swish", "silu"):
        s = g.node("Sigmoid", [x], f"{prefix}_swish_sig")
        return g.node("Mul", [x, s], f"{prefix}_swish")
    if kind == "mish":
        sp = g.node("Softplus", [x], f"{prefix}_mish_softplus")
        t = g.node("Tanh", [sp], f"{prefix}_mish_tanh")
        return g.node("Mul", [x, t], f"{prefix}_mish")
    raise ValueError(f"unsupported activation '{kind}'")


@dataclass
class Tensor:
    """A layer's output: ONNX value name and its (C, H, W) shape."""

    name: str
    c: int
    h: int
    w: int


def convert(cfg_text: str, weights: bytes, names: list[str], imgsz: int) -> tuple[onnx.ModelProto, dict]:
    """Builds the ONNX model. Returns (model, summary dict)."""
    sections = parse_cfg(cfg_text)
    net = sections[0]
    channels = net.integer("channels", 3)
    if channels != 3:
        raise ValueError(f"only 3-channel networks are supported (cfg has channels={channels})")
    reader = WeightsReader(weights)
    g = GraphBuilder()
    outputs: list[Tensor] = []
    current = Tensor("images", channels, imgsz, imgsz)
    yolo_heads: list[str] = []
    anchors_total = 0
    nc_seen: int | None = None
    strides: list[int] = []

    for index, sec in enumerate(sections[1:]):
        p = f"l{index:03d}_{sec.type}"
        if sec.type in ("convolutional", "conv"):
            filters = sec.integer("filters")
            size = sec.integer("size", 1)
            stride = sec.integer("stride", 1)
            groups = sec.integer("groups", 1)
            pad = sec.integer("padding", 0)
            if sec.integer("pad", 0):
                pad = size // 2
            bn = sec.integer("batch_normalize", 0)
            if current.c % groups:
                raise ValueError(f"{p}: channels {current.c} not divisible by groups {groups}")
            bias = reader.take(filters, f"{p} biases")
            if bn:
                scales = reader.take(filters, f"{p} scales")
                mean = reader.take(filters, f"{p} rolling mean")
                var = reader.take(filters, f"{p} rolling variance")
            weight = reader.take(filters * (current.c // groups) * size * size, f"{p} weights")
            weight = weight.reshape(filters, current.c // groups, size, size)
            if bn:
                factor = (scales / (np.sqrt(var) + np.float32(0.000001))).astype(np.float32)
                weight = (weight * factor[:, None, None, None]).astype(np.float32)
                bias = (bias - mean * factor).astype(np.float32)
            w_name = g.const(f"{p}.weight", weight)
            b_name = g.const(f"{p}.bias", bias)
            y = g.node(
                "Conv",
                [current.name, w_name, b_name],
                f"{p}_conv",
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
                group=groups,
            )
            y = activation(g, sec.text("activation", "logistic"), y, p)
            oh = (current.h + 2 * pad - size) // stride + 1
            ow = (current.w + 2 * pad - size) // stride + 1
            current = Tensor(y, filters, oh, ow)
        elif sec.type in ("maxpool", "max"):
            size = sec.integer("size", sec.integer("stride", 1))
            stride = sec.integer("stride", 1)
            padding = sec.integer("padding", size - 1)
            begin = padding // 2  # darknet: offset = -pad/2 with C truncation
            oh = (current.h + padding - size) // stride + 1
            ow = (current.w + padding - size) // stride + 1
            end_h = max(0, (oh - 1) * stride + size - current.h - begin)
            end_w = max(0, (ow - 1) * stride + size - current.w - begin)
            for o, n, e in ((oh, current.h, end_h), (ow, current.w, end_w)):
                if (n + begin + e - size) // stride + 1 != o:
                    raise ValueError(f"{p}: cannot express Darknet maxpool padding for input {n}")
            y = g.node(
                "MaxPool",
                [current.name],
                f"{p}_pool",
                kernel_shape=[size, size],
                strides=[stride, stride],
                pads=[begin, begin, end_h, end_w],
            )
            current = Tensor(y, current.c, oh, ow)
        elif sec.type == "upsample":
            stride = sec.integer("stride", 2)
            if sec.number("scale", 1.0) != 1.0:
                raise ValueError(f"{p}: [upsample] scale != 1 is not supported")
            scales = g.const(f"{p}.scales", np.array([1, 1, stride, stride], dtype=np.float32))
            y = g.node(
                "Resize",
                [current.name, "", scales],
                f"{p}_resize",
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
                nearest_mode="floor",
            )
            current = Tensor(y, current.c, current.h * stride, current.w * stride)
        elif sec.type == "route":
            layers = [i if i >= 0 else index + i for i in sec.integers("layers")]
            sources = []
            groups = sec.integer("groups", 1)
            group_id = sec.integer("group_id", 0)
            for i in layers:
                if not 0 <= i < index:
                    raise ValueError(f"{p}: route to layer {i} is out of range")
                src = outputs[i]
                if groups > 1:
                    part = src.c // groups
                    starts = g.const(f"{p}.from{i}.starts", np.array([part * group_id], dtype=np.int64))
                    ends = g.const(f"{p}.from{i}.ends", np.array([part * (group_id + 1)], dtype=np.int64))
                    axes = g.const(f"{p}.from{i}.axes", np.array([1], dtype=np.int64))
                    name = g.node("Slice", [src.name, starts, ends, axes], f"{p}_slice{i}")
                    src = Tensor(name, part, src.h, src.w)
                sources.append(src)
            if any((s.h, s.w) != (sources[0].h, sources[0].w) for s in sources):
                raise ValueError(f"{p}: routed layers have different spatial sizes")
            if len(sources) == 1:
                current = sources[0]
            else:
                y = g.node("Concat", [s.name for s in sources], f"{p}_concat", axis=1)
                current = Tensor(y, sum(s.c for s in sources), sources[0].h, sources[0].w)
        elif sec.type in ("shortcut", "shortcut_layer"):
            src_index = sec.integer("from")
            src = outputs[src_index if src_index >= 0 else index + src_index]
            if (src.c, src.h, src.w) != (current.c, current.h, current.w):
                raise ValueError(f"{p}: shortcut between differently shaped tensors is not supported")
            y = g.node("Add", [current.name, src.name], f"{p}_add")
            y = activation(g, sec.text("activation", "linear"), y, p)
            current = Tensor(y, current.c, current.h, current.w)
        elif sec.type in ("yolo",):
            classes = sec.integer("classes", 20)
            anchors = np.array(sec.numbers("anchors"), dtype=np.float32).reshape(-1, 2)
            mask = sec.integers("mask", list(range(len(anchors))))
            scale_xy = sec.number("scale_x_y", 1.0)
            if sec.integer("new_coords", 0):
                raise ValueError(f"{p}: new_coords=1 (scaled-YOLOv4 heads) is not supported")
            if nc_seen is not None and classes != nc_seen:
                raise ValueError(f"{p}: [yolo] layers disagree on classes")
            nc_seen = classes
            a, h, w, no = len(mask), current.h, current.w, 5 + classes
            if current.c != a * no:
                raise ValueError(f"{p}: input has {current.c} channels, expected {a} * {no}")
            stride_x, stride_y = imgsz / w, imgsz / h
            strides.append(int(round(imgsz / w)))
            # [1, A*no, H, W] -> [1, A, no, H, W] -> [1, A, H, W, no] -> [1, A*H*W, no]
            s1 = g.const(f"{p}.shape5", np.array([1, a, no, h, w], dtype=np.int64))
            r = g.node("Reshape", [current.name, s1], f"{p}_reshape5")
            t = g.node("Transpose", [r], f"{p}_transpose", perm=[0, 1, 3, 4, 2])
            s2 = g.const(f"{p}.shape3", np.array([1, a * h * w, no], dtype=np.int64))
            rows = g.node("Reshape", [t, s2], f"{p}_rows")
            # grid offsets and anchor sizes per row, in (a, y, x) order
            gy, gx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
            grid = np.stack([gx, gy], axis=-1).reshape(1, 1, h * w, 2)
            grid = np.broadcast_to(grid, (1, a, h * w, 2)).reshape(1, a * h * w, 2)
            grid = grid - np.float32((scale_xy - 1.0) / 2.0)
            anchor_rows = np.broadcast_to(anchors[mask].reshape(1, a, 1, 2), (1, a, h * w, 2))
            anchor_rows = anchor_rows.reshape(1, a * h * w, 2).astype(np.float32)
            grid_name = g.const(f"{p}.grid", grid.astype(np.float32))
            anchor_name = g.const(f"{p}.anchors", anchor_rows)
            stride_name = g.const(f"{p}.stride", np.array([stride_x, stride_y], dtype=np.float32))
            split_name = g.const(f"{p}.split", np.array([2, 2, 1 + classes], dtype=np.int64))
            xy, wh, rest = f"{p}_xy_raw", f"{p}_wh_raw", f"{p}_rest_raw"
            g.nodes.append(helper.make_node("Split", [rows, split_name], [xy, wh, rest], name=f"{p}_split", axis=2))
            xy = g.node("Sigmoid", [xy], f"{p}_xy_sigmoid")
            if scale_xy != 1.0:
                sxy = g.const(f"{p}.scale_x_y", np.array(scale_xy, dtype=np.float32))
                xy = g.node("Mul", [xy, sxy], f"{p}_xy_scaled")
            xy = g.node("Add", [xy, grid_name], f"{p}_xy_grid")
            xy = g.node("Mul", [xy, stride_name], f"{p}_xy")
            wh = g.node("Exp", [wh], f"{p}_wh_exp")
            wh = g.node("Mul", [wh, anchor_name], f"{p}_wh")
            rest = g.node("Sigmoid", [rest], f"{p}_conf")
            y = g.node("Concat", [xy, wh, rest], f"{p}_decoded", axis=2)
            yolo_heads.append(y)
            anchors_total += a * h * w
            # a [yolo] layer's "output" for later routes is its input, as in Darknet
        elif sec.type in ("dropout",):
            pass
        else:
            raise ValueError(f"unsupported Darknet layer [{sec.type}] (section {index}, cfg line {sec.line})")
        outputs.append(current)

    if not yolo_heads:
        raise ValueError("cfg has no [yolo] layer")
    if reader.remaining:
        raise ValueError(f"weights file has {reader.remaining} unused floats (cfg and weights do not match)")
    if len(names) != nc_seen:
        raise ValueError(f"names file has {len(names)} names, the cfg's [yolo] layers have classes={nc_seen}")

    if len(yolo_heads) == 1:
        g.nodes.append(helper.make_node("Identity", [yolo_heads[0]], ["output0"], name="output0"))
    else:
        g.nodes.append(helper.make_node("Concat", yolo_heads, ["output0"], name="output0", axis=1))

    graph = helper.make_graph(
        g.nodes,
        "darknet_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, anchors_total, 5 + nc_seen])],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="YOLOSwap darknet2onnx",
        producer_version=CONVERTER_VERSION,
    )
    model.ir_version = IR_VERSION
    summary = {
        "layers": len(sections) - 1,
        "darknet_version": ".".join(map(str, reader.version)),
        "rows": anchors_total,
        "nc": nc_seen,
        "strides": strides,
    }
    return model, summary


def ultralytics_metadata(names: list[str], imgsz: int, stride: int, weights_sha: str, description: str) -> dict:
    """The metadata_props Ultralytics writes, plus our provenance keys. Values are strings."""
    return {
        "description": description,
        "author": "YOLOSwap tools/darknet2onnx.py",
        "version": CONVERTER_VERSION,
        "source": weights_sha,
        "format": "yolov5",
        "stride": str(stride),
        "task": "detect",
        "batch": "1",
        "imgsz": str([imgsz, imgsz]),
        "names": str(dict(enumerate(names))),
    }


def read_names(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", required=True, help="Darknet .cfg")
    ap.add_argument("--weights", required=True, help="Darknet .weights")
    ap.add_argument("--names", required=True, help="class names, one per line")
    ap.add_argument("--imgsz", type=int, default=416, help="square input size (multiple of 32; default 416)")
    ap.add_argument("--output", required=True, help="output .onnx path")
    args = ap.parse_args(argv)

    if args.imgsz <= 0 or args.imgsz % 32:
        ap.error(f"--imgsz must be a positive multiple of 32, got {args.imgsz}")
    with open(args.cfg, encoding="utf-8") as f:
        cfg_text = f.read()
    with open(args.weights, "rb") as f:
        weights = f.read()
    names = read_names(args.names)
    model, summary = convert(cfg_text, weights, names, args.imgsz)
    weights_sha = hashlib.sha256(weights).hexdigest()
    base = os.path.splitext(os.path.basename(args.weights))[0]
    meta = ultralytics_metadata(
        names,
        args.imgsz,
        max(summary["strides"]),
        weights_sha,
        f"Darknet {base} converted to ONNX (decoded YOLOv5-style output: cx,cy,w,h,obj,{len(names)} class probs)",
    )
    for key, value in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model, full_check=True)

    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    tmp = args.output + ".part"
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    os.replace(tmp, args.output)
    print(
        f"darknet2onnx: {base} ({summary['layers']} layers, darknet {summary['darknet_version']}) -> "
        f"{args.output}: images[1,3,{args.imgsz},{args.imgsz}] -> output0[1,{summary['rows']},{5 + summary['nc']}], "
        f"nc={summary['nc']}, strides={summary['strides']}, opset {OPSET}, "
        f"{os.path.getsize(args.output) / 1e6:.1f} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
