#!/usr/bin/env python3
"""Write hostile ONNX models: files a model repository may hold that must never crash, hang or fool YOLOSwap.

Each is a variation of one valid model, `baseline.onnx` (written too): yolov5 layout, 80 COCO classes, input
`images` float32 [1, 3, 416, 416], output `output0` [1, 2535, 85], a person, a bus and a dog baked into the output
(tools/make_test_models.py's `constant_model` and `rows_coco`). Every hostile model keeps its COCO names, so none of
them fails for being a different detector: what fails it is the attack itself.

DIR/manifest.json (schema_version 1) lists every file:
  file, attack (what the file does),
  expect "refused": a load must fail, its reason containing every string of `reason_contains` (case-insensitive);
      `refused_at` says which check sees it: "load" (the file, ONNX Runtime or the schema: `yoloswap inspect` fails
      too) or "warmup" (only the outputs of a run show it),
  expect "served": a load succeeds (nothing before serving can see the problem); `on_traffic` says what detections on a
      real photo must do: "clean" (exactly the baseline's person, bus and dog: the NaN and infinite rows give no
      detection), "empty" (no detection) or "output_error" (the request fails with a reason containing
      `reason_contains`, the process lives).

Nothing here is large on disk: a "huge" tensor or file is declared huge, never written. Output is deterministic (same
bytes for the same onnx version).

Usage: python tools/make_hostile_models.py --output DIR
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
import make_test_models as synthetic  # noqa: E402
from make_test_models import constant_model, metadata, rows_coco, v5_row  # noqa: E402

SIZE, N = 416, 2535
IN_SHAPE, OUT_SHAPE = [1, 3, SIZE, SIZE], [1, N, 85]
DYNAMIC_IN = ["batch", 3, "height", "width"]
# The real-photo threshold of the input-dependent models: the warm-up's grey image (114/255 = 0.447 everywhere)
# stays below it, a photo with any bright pixel goes above.
BRIGHT = 0.5


# MARK: - building blocks


def baseline(names: list[str], description: str = "baseline: a person, a bus and a dog") -> onnx.ModelProto:
    rows, _ = rows_coco(SIZE, N)
    return constant_model(rows, N, 85, "yolov5", IN_SHAPE, OUT_SHAPE, metadata(names, (SIZE, SIZE), description))


def copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def detach_output(graph: onnx.GraphProto, name: str) -> None:
    """Renames the node that makes `output0` (and its output) to `name`, so that new nodes can make `output0`."""
    node = next(n for n in graph.node if "output0" in n.output)
    node.output[:] = [name if o == "output0" else o for o in node.output]
    node.name = name


def set_meta(model: onnx.ModelProto, key: str, value: str) -> onnx.ModelProto:
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
            return model
    model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return model


def set_dims(value_info: onnx.ValueInfoProto, dims: list) -> None:
    """Replaces a tensor's declared shape (ints are static dims, strings symbolic), without checking anything."""
    shape = value_info.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d


def with_imgsz(names: list[str], imgsz: str) -> onnx.ModelProto:
    """The baseline with a dynamic input, so that the metadata `imgsz` decides the input size."""
    m = baseline(names, f"dynamic input, metadata imgsz {imgsz!r}")
    set_dims(m.graph.input[0], DYNAMIC_IN)
    return set_meta(m, "imgsz", imgsz)


def with_rows(names: list[str], extra: dict[int, list[float]], description: str, layout: str = "yolov5",
              nan_cells: list[tuple[int, int]] = ()) -> onnx.ModelProto:
    """The baseline's rows plus `extra` (constant: every run, the warm-up's included, returns them)."""
    rows, _ = rows_coco(SIZE, N)
    rows = {**rows, **extra}
    return constant_model(rows, N, 85, layout, IN_SHAPE, OUT_SHAPE, metadata(names, (SIZE, SIZE), description),
                          nan_cells)


def external(model: onnx.ModelProto, initializer: str, location: str, offset: int | None = None,
             length: int | None = None) -> onnx.ModelProto:
    """Moves an initializer's data out of the file: its bytes are to be read from `location` (never written)."""
    m = copy(model)
    init = next(i for i in m.graph.initializer if i.name == initializer)
    for field in ("raw_data", "float_data", "int64_data", "int32_data"):
        init.ClearField(field)
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            init.external_data.append(onnx.StringStringEntryProto(key=key, value=str(value)))
    return m


def opaque_output(model: onnx.ModelProto, declared: list) -> onnx.ModelProto:
    """The model with output0 declared as `declared` (rank 3) and made by a Reshape to a shape computed at run time
    (its own shape plus 0 × the input's mean), so that ONNX Runtime cannot infer it and reports the declared one."""
    m = copy(model)
    g = m.graph
    detach_output(g, "output0_known")
    g.node.extend([
        helper.make_node("Shape", ["output0_known"], ["known_shape"], name="known_shape"),
        helper.make_node("Cast", ["input_zero"], ["input_zero_i"], name="input_zero_i", to=TensorProto.INT64),
        helper.make_node("Add", ["known_shape", "input_zero_i"], ["opaque_shape"], name="opaque_shape"),
        helper.make_node("Reshape", ["output0_known", "opaque_shape"], ["output0"], name="output0"),
    ])
    set_dims(g.output[0], declared)
    return m


def side_input(model: onnx.ModelProto, tensor: onnx.TensorProto) -> onnx.ModelProto:
    """Adds `tensor` as an initializer that the output depends on (output0 += 0 * mean(float(tensor))), so that a
    session must read it."""
    m = copy(model)
    g = m.graph
    detach_output(g, "output0_main")
    g.initializer.append(tensor)
    g.node.extend([
        helper.make_node("Cast", [tensor.name], ["side_f"], name="side_f", to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["side_f"], ["side_mean"], name="side_mean", keepdims=0),
        helper.make_node("Mul", ["side_mean", "zero"], ["side_zero"], name="side_zero"),
        helper.make_node("Add", ["output0_main", "side_zero"], ["output0"], name="output0"),
    ])
    return m


def bytes_tensor(name: str, count: int) -> onnx.TensorProto:
    t = TensorProto()
    t.name = name
    t.data_type = TensorProto.UINT8
    t.dims.append(count)
    t.raw_data = bytes(count)
    return t


def depends_on_brightness(clean: onnx.ModelProto, hostile: onnx.ModelProto) -> onnx.ModelProto:
    """output0 = hostile's table where max(images) > BRIGHT, else clean's: a warm-up on a grey image sees a valid
    output, a real photo gets the hostile one."""
    m = copy(clean)
    g = m.graph
    h = hostile.graph
    detach_output(g, "clean_out")
    prefix = "h_"
    renamed = {"images": "images", "zero": "zero"}
    for init in h.initializer:
        if init.name not in ("zero",):
            t = onnx.TensorProto()
            t.CopyFrom(init)
            t.name = prefix + init.name
            renamed[init.name] = t.name
            g.initializer.append(t)
    for node in h.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.name = prefix + node.name
        n.input[:] = [renamed.setdefault(i, prefix + i) for i in node.input]
        n.output[:] = [renamed.setdefault(o, prefix + o) for o in node.output]
        g.node.append(n)
    g.initializer.append(numpy_helper.from_array(np.array(BRIGHT, np.float32), "bright"))
    g.node.extend([
        helper.make_node("ReduceMax", ["images"], ["input_max"], name="input_max", keepdims=0),
        helper.make_node("Greater", ["input_max", "bright"], ["is_photo"], name="is_photo"),
        helper.make_node("Where", ["is_photo", renamed["output0"], "clean_out"], ["output0"], name="output0"),
    ])
    onnx.checker.check_model(m, full_check=True)
    return m


def nested_if(depth: int) -> bytes:
    """A model whose graph nests `depth` If nodes, each in the last one's then-branch: far deeper than protobuf parsers
    allow (ONNX Runtime's refuses past 100 nested messages; one level here is four). Written as raw protobuf, since
    the Python protobuf library refuses such depth too."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:  # a length-delimited field; repeated ones append
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, OUT_SHAPE)
    leaf = helper.make_graph([helper.make_node("Identity", ["table"], ["output0"])], "leaf", [], [out])
    graph = leaf.SerializeToString()
    else_branch = helper.make_attribute("else_branch", leaf).SerializeToString()
    for level in range(depth):
        then = onnx.AttributeProto(name="then_branch", type=onnx.AttributeProto.GRAPH).SerializeToString()
        node = helper.make_node("If", ["cond"], ["output0"], name=f"if{level}").SerializeToString()
        node += field(5, then + field(6, graph)) + field(5, else_branch)  # NodeProto.attribute = 5, .g = 6
        graph = helper.make_graph([], f"level{level}", [], [out]).SerializeToString() + field(1, node)  # .node = 1
    top = helper.make_graph(
        [], "nested_if", [helper.make_tensor_value_info("images", TensorProto.FLOAT, IN_SHAPE)], [out],
        [numpy_helper.from_array(np.array(True), "cond"), numpy_helper.from_array(np.zeros(OUT_SHAPE, np.float32)[:, :1],
                                                                                   "table")])
    model = helper.make_model(helper.make_graph([], "", [], []), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = synthetic.IR_VERSION
    return model.SerializeToString() + field(7, top.SerializeToString() + graph)  # ModelProto.graph = 7


# MARK: - the models


def models(names: list[str]) -> list[tuple[str, object, dict]]:
    """(file, model or raw bytes, manifest entry) for every hostile file."""
    out: list[tuple[str, object, dict]] = []

    def refused(file, model, attack, reason_contains, at):
        out.append((file, model, {"attack": attack, "expect": "refused", "refused_at": at,
                                  "reason_contains": reason_contains}))

    def served(file, model, attack, on_traffic, reason_contains=()):
        out.append((file, model, {"attack": attack, "expect": "served", "on_traffic": on_traffic,
                                  "reason_contains": list(reason_contains)}))

    base = baseline(names)
    whole = base.SerializeToString()

    # Metadata imgsz of a dynamic-input model: the size every request is letterboxed to.
    for file, text in (("imgsz-zero.onnx", "0"), ("imgsz-1e10.onnx", "1e10"), ("imgsz-negative.onnx", "[-640, 640]"),
                       ("imgsz-text.onnx", "[640, 'wide']"), ("imgsz-huge.onnx", "[100000, 100000]"),
                       ("imgsz-past-int64.onnx", "99999999999999999999")):
        refused(file, with_imgsz(names, text), f"metadata imgsz {text!r}", ["imgsz", text], "load")

    # Declared static input dimensions.
    for file, dims, why in (("input-zero.onnx", [1, 3, 0, 0], "an input of 0x0 pixels"),
                            ("input-huge.onnx", [1, 3, 100_000, 100_000], "an input of 100000x100000 pixels"),
                            ("input-overflow.onnx", [1, 3, 1 << 62, 1 << 62],
                             "input sides of 2^62, whose product overflows 64 bits")):
        m = copy(base)
        set_dims(m.graph.input[0], dims)
        refused(file, m, why, ["input", "1...8192"], "load")
    m = copy(base)
    set_dims(m.graph.input[0], [8, 3, SIZE, SIZE])
    refused("input-batch-8.onnx", m, "a static batch of 8 (requests are one image)", ["input", "[8, 3, 416, 416]"],
            "load")
    m = copy(base)
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    m.graph.node.insert(0, helper.make_node("Cast", ["images"], ["images_f"], name="images_f", to=TensorProto.FLOAT))
    for node in m.graph.node[1:]:
        node.input[:] = ["images_f" if i == "images" else i for i in node.input]
    refused("input-int64.onnx", m, "an int64 image input", ["input", "float32 or float16"], "load")

    # Output shapes: made by the graph (ONNX Runtime reports the shape it infers, whatever the file declares), or
    # declared over a shape no inference can see through.
    rows, _ = rows_coco(SIZE, N)
    m = constant_model(rows, N, 85, "rank2", IN_SHAPE, [N, 85], metadata(names, (SIZE, SIZE), "rank 2"))
    refused("output-rank-2.onnx", m, "a rank-2 output", ["rank-3"], "load")
    for file, dims, why, reason, node, inits in (
        ("output-rank-4.onnx", [1, 1, N, 85], "a rank-4 output", ["rank-3"],
         helper.make_node("Unsqueeze", ["output0_known", "axis0"], ["output0"], name="output0"),
         [numpy_helper.from_array(np.array([0], np.int64), "axis0")]),
        ("output-no-boxes.onnx", [1, 0, 85], "an output of 0 boxes: a detector that can never detect",
         ["output", "no boxes"],
         helper.make_node("Slice", ["output0_known", "start0", "start0", "axis1"], ["output0"], name="output0"),
         [numpy_helper.from_array(np.array([0], np.int64), "start0"),
          numpy_helper.from_array(np.array([1], np.int64), "axis1")]),
        ("output-no-classes.onnx", [1, N, 5], "an output without class columns", ["output", "does not fit 80 classes"],
         helper.make_node("Slice", ["output0_known", "start0", "end5", "axis2"], ["output0"], name="output0"),
         [numpy_helper.from_array(np.array([0], np.int64), "start0"),
          numpy_helper.from_array(np.array([5], np.int64), "end5"),
          numpy_helper.from_array(np.array([2], np.int64), "axis2")]),
    ):
        m = copy(base)
        detach_output(m.graph, "output0_known")
        m.graph.node.append(node)
        m.graph.initializer.extend(inits)
        set_dims(m.graph.output[0], dims)
        onnx.checker.check_model(m, full_check=True)
        refused(file, m, why, reason, "load")
    refused("output-overflow.onnx", opaque_output(base, [1, 1 << 62, 1 << 62]),
            "declared output dims of 2^62 (their product overflows)", ["output", "4611686018427387904"], "load")
    # The declared shape says 2^40 boxes; the graph makes 2535: only a run shows the difference.
    refused("output-shape-lies.onnx", opaque_output(base, [1, 1 << 40, 85]),
            "declares [1, 2^40, 85], outputs [1, 2535, 85]", ["output shape", "differs from declared"], "warmup")
    m = copy(base)
    g = m.graph
    detach_output(g, "output0_f")
    g.node.append(helper.make_node("Cast", ["output0_f"], ["output0"], name="output0", to=TensorProto.INT64))
    g.output[0].type.tensor_type.elem_type = TensorProto.INT64
    refused("output-int64.onnx", m, "an int64 output", ["output", "float32 or float16"], "load")
    m = copy(base)
    del m.graph.output[:]
    refused("output-none.onnx", m, "a graph with no output at all", ["no output"], "load")
    m = copy(base)
    detach_output(m.graph, "output0_t")
    m.graph.node.append(helper.make_node("SequenceConstruct", ["output0_t"], ["output0"], name="output0"))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_sequence_value_info("output0", TensorProto.FLOAT, None))
    refused("output-sequence.onnx", m, "an output that is a sequence of tensors, not a tensor", ["not a tensor"],
            "load")
    many = [f"class{i}" for i in range(70_000)]
    m = set_meta(opaque_output(base, [1, N, 70_005]), "names", str(many))
    refused("classes-70000.onnx", m, "70000 class names and an output declared to match",
            ["70000 classes", "more than 65536"], "load")

    # Output values every run returns (the warm-up's too).
    nan_cells = [(10, j) for j in range(85)]
    refused("values-nan.onnx", with_rows(names, {}, "NaN row", nan_cells=nan_cells), "a row of NaN",
            ["non-finite"], "warmup")
    refused("values-inf.onnx", with_rows(names, {20: v5_row(np.inf, 100, 50, 50, 1.0, 3, 0.875, 80)}, "inf box"),
            "an infinite box centre", ["non-finite"], "warmup")
    refused("values-score-1e30.onnx", with_rows(names, {20: v5_row(100, 100, 50, 50, 1e30, 3, 0.875, 80)},
                                                "score 1e30"), "objectness 1e30", ["score", "outside [0, 1]"], "warmup")
    refused("values-score-negative.onnx", with_rows(names, {20: v5_row(100, 100, 50, 50, 1.0, 3, -0.5, 80)},
                                                    "negative score"), "a class probability of -0.5",
            ["score -0.5", "outside [0, 1]"], "warmup")
    v10_meta = metadata(names, (SIZE, SIZE), "yolov10 end-to-end")
    v10_meta["end2end"] = "True"
    for file, cls, reason in (("yolov10-class-nan.onnx", np.nan, ["non-finite"]),
                              ("yolov10-class-1e30.onnx", 1e30, ["class 1e+30", "80 classes"]),
                              ("yolov10-class-negative.onnx", -3.0, ["class -3.0", "80 classes"]),
                              ("yolov10-class-past-names.onnx", 80.0, ["class 80.0", "80 classes"])):
        rows = {0: [100, 120, 300, 400, 0.875, 0], 1: [50, 60, 150, 160, 0.75, cls]}
        m = constant_model(rows, 300, 6, "yolov10", IN_SHAPE, [1, 300, 6], v10_meta,
                           [(1, 5)] if np.isnan(cls) else [])
        refused(file, m, f"a yolov10 class column of {cls}", reason, "warmup")

    # Files ONNX Runtime must refuse.
    refused("empty.onnx", b"", "an empty file", ["ONNX Runtime"], "load")
    refused("truncated.onnx", whole[: len(whole) // 2], "the first half of baseline.onnx", ["protobuf"], "load")
    m = copy(base)
    m.graph.node.append(helper.make_node("NoSuchOp", ["output0"], ["unused"], name="nosuch"))
    refused("unknown-op.onnx", m, "an operator the ONNX standard does not have", ["NoSuchOp"], "load")
    m = copy(base)
    m.opset_import.append(helper.make_opsetid("com.example.evil", 1))
    m.graph.node.append(helper.make_node("Exfiltrate", ["output0"], ["unused"], name="evil",
                                         domain="com.example.evil"))
    refused("custom-domain-op.onnx", m, "an operator of a domain ONNX Runtime has no kernels for", ["Exfiltrate"],
            "load")
    m = copy(base)
    m.ir_version = 99
    refused("ir-version-99.onnx", m, "an ONNX IR version from the future", ["IR version"], "load")
    refused("nested-if.onnx", nested_if(1000), "1000 nested If subgraphs (recursion depth)", ["protobuf"], "load")

    # External data: tensor bytes read from another file, which no digest or signature covers.
    refused("external-dotdot.onnx", external(base, "row_values", "../../../../../../../../etc/passwd"),
            "external data at ../../../../etc/passwd", ["external data", "row_values"], "load")
    refused("external-absolute.onnx", external(base, "row_values", "/etc/passwd"),
            "external data at /etc/passwd", ["external data", "row_values"], "load")
    refused("external-working-dir.onnx",
            external(side_input(base, bytes_tensor("secret", 64)), "secret", "Package.swift", 0, 64),
            "external data read from the server's working directory (Package.swift at the repository root)",
            ["external data", "secret"], "load")
    refused("external-huge-length.onnx", external(base, "row_values", "baseline.onnx", 0, 1 << 40),
            "external data claiming 1 TiB of a file beside it", ["external data", "row_values"], "load")

    # Tensors declared huge.
    huge = TensorProto(name="huge", data_type=TensorProto.FLOAT, dims=[1 << 40], raw_data=bytes(16))
    refused("initializer-huge.onnx", side_input(base, huge), "an initializer declared as 2^40 floats, holding 16 bytes",
            ["huge"], "load")
    overflow = TensorProto(name="overflow", data_type=TensorProto.FLOAT, dims=[1 << 32, 1 << 32], raw_data=bytes(16))
    refused("initializer-overflow.onnx", side_input(base, overflow),
            "an initializer of [2^32, 2^32] floats (its byte count overflows 64 bits)", ["Integer overflow"], "load")
    m = copy(base)
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array([1 << 30, 1 << 30], np.int64), "huge_shape"))
    detach_output(g, "output0_main")
    g.node.extend([
        helper.make_node("ConstantOfShape", ["huge_shape"], ["huge_zeros"], name="huge_zeros",
                         value=numpy_helper.from_array(np.zeros(1, np.float32))),
        helper.make_node("ReduceMax", ["huge_zeros"], ["huge_max"], name="huge_max", keepdims=0),
        helper.make_node("Add", ["output0_main", "huge_max"], ["output0"], name="output0"),
    ])
    # 4 EiB: past any address space, so the allocation fails at once whatever the system's overcommit policy.
    refused("run-allocates-4eib.onnx", m, "each run allocates a [2^30, 2^30] float tensor (4 EiB)",
            ["allocat"], "warmup")

    # An output of dynamic length that is empty at run time (as an export with NMS inside gives when nothing is found):
    # ONNX Runtime may hand back no buffer at all for it.
    m = copy(base)
    g = m.graph
    detach_output(g, "output0_known")
    g.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "start0"),
                          numpy_helper.from_array(np.array([1], np.int64), "axis1")])
    g.node.extend([
        helper.make_node("Cast", ["input_zero"], ["input_zero_i"], name="input_zero_i", to=TensorProto.INT64),
        helper.make_node("Add", ["start0", "input_zero_i"], ["end0"], name="end0"),  # 0, known only at run time
        helper.make_node("Slice", ["output0_known", "start0", "end0", "axis1"], ["output0"], name="output0"),
    ])
    set_dims(g.output[0], [1, "boxes", 85])
    onnx.checker.check_model(m, full_check=True)
    served("output-empty-at-run.onnx", m, "a dynamic box count, 0 at every run", "empty")

    # Outputs that only a real photo turns hostile: the warm-up's grey image gets the baseline's.
    bad_rows = {
        10: v5_row(np.nan, 100, 50, 50, 1.0, 3, 0.875, 80),  # NaN box, score .875
        11: v5_row(100, 100, np.inf, 50, 1.0, 3, 0.875, 80),  # infinite box
        12: v5_row(100, 100, 50, 50, np.inf, 3, 0.875, 80),  # infinite score
        13: v5_row(100, 100, 50, 50, np.nan, 3, 0.875, 80),  # NaN objectness
        14: v5_row(100, 100, 50, 50, 1.0, 3, np.nan, 80),  # NaN class probability
        15: v5_row(100, 100, 50, 50, np.inf, 3, 0.0, 80),  # inf x 0 = NaN score
    }
    hostile = with_rows(names, bad_rows, "NaN and infinite rows")
    served("nan-on-photos.onnx", depends_on_brightness(base, hostile),
           "NaN and infinite boxes and scores, only for images brighter than the warm-up's grey", "clean")
    rows, _ = rows_coco(SIZE, N)
    v8_rows = {i: [*r[:4], *(np.array(r[5:]) * r[4])] for i, r in rows.items()}
    v8_bad = {**v8_rows, 10: [np.nan, 100, 50, 50, *([0.0] * 3), 0.875, *([0.0] * 76)],
              11: [100, 100, 50, np.inf, *([0.0] * 3), 0.875, *([0.0] * 76)],
              12: [100, 100, 50, 50, *([np.nan] * 80)], 13: [100, 100, 50, 50, *([np.inf] * 80)]}
    v8_meta = metadata(names, (SIZE, SIZE), "yolov8 layout")
    clean8 = constant_model(v8_rows, N, 84, "yolov8", IN_SHAPE, [1, 84, N], v8_meta)
    bad8 = constant_model(v8_bad, N, 84, "yolov8", IN_SHAPE, [1, 84, N], v8_meta)
    served("nan-on-photos-yolov8.onnx", depends_on_brightness(clean8, bad8),
           "yolov8 layout: NaN and infinite boxes and scores, only for images brighter than grey", "clean")
    v10_clean = {0: [100, 120, 300, 400, 0.875, 0]}
    v10_bad = {**v10_clean, 1: [50, 60, 150, 160, 0.75, 1e30]}
    served("yolov10-class-1e30-on-photos.onnx",
           depends_on_brightness(constant_model(v10_clean, 300, 6, "yolov10", IN_SHAPE, [1, 300, 6], v10_meta),
                                 constant_model(v10_bad, 300, 6, "yolov10", IN_SHAPE, [1, 300, 6], v10_meta)),
           "yolov10: a class column of 1e30, only for images brighter than grey", "output_error", ["class"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write hostile ONNX models and manifest.json (see the module doc).")
    ap.add_argument("--output", required=True, help="output directory")
    args = ap.parse_args(argv)
    os.makedirs(args.output, exist_ok=True)
    names = synthetic.coco_names()
    entries = []
    files = [("baseline.onnx", baseline(names), {"attack": None, "expect": "baseline"})] + models(names)
    for file, model, entry in files:
        data = model if isinstance(model, bytes) else model.SerializeToString()
        with open(os.path.join(args.output, file), "wb") as f:
            f.write(data)
        entries.append({"file": file, **entry})
    manifest = {"schema_version": 1, "generator": "tools/make_hostile_models.py", "models": entries}
    with open(os.path.join(args.output, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, allow_nan=False)
        f.write("\n")
    for e in entries:
        print(f"{e['file']:36} {e['expect']:9} {e.get('refused_at', e.get('on_traffic', '')):12} {e['attack'] or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
