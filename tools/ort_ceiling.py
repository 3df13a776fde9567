#!/usr/bin/env python3
"""How many frames a second ONNX Runtime alone can give on this machine: the ceiling of any stream loop around it.

Runs the model on a fixed random input, with nothing else (no decoding, letterbox or NMS), in the two ways a 2-core
machine can use both cores: one Run at a time on `--threads` intra-op threads (what the Python loop does), and
`--threads` Runs side by side with one intra-op thread each (what the stream's frames in flight do). Prints one JSON
object: {"single_thread_run_ms" (median), "one_run_fps", "side_by_side_fps", "ratio", "threads", "model"}.

Session options can be tried on the same measurement: `--optimization` (ORT's graph optimization level) and
`--config KEY=VALUE` (a session config entry, repeatable), e.g. `--config session.set_denormal_as_zero=1`.

`--batch N` also asks whether N frames in one Run cost less per frame than one: a copy of a model whose batch is
fixed at 1 is made with a symbolic batch (its Reshape targets' leading 1 made 0, "as the input"), and one-thread
Runs of the two — N frames, then one — alternate; it adds {"batch", "batch_frame_ms" (median per frame, batch N),
"frame_ms" (median, batch 1), "batch_ratio"}.

Usage:
  python tools/ort_ceiling.py --model models/yolov3-tiny-coco-416.onnx --threads 2 --runs 120
  python tools/ort_ceiling.py --model models/yolov3-tiny-coco-416.onnx --optimization extended
  python tools/ort_ceiling.py --model models/yolov3-tiny-coco-416.onnx --batch 2 --runs 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time

import numpy as np
import onnxruntime as ort


LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session(model: str, threads: int, optimization: str, config: list[tuple[str, str]]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = LEVELS[optimization]
    for key, value in config:
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def batched_copy(model: str, directory: str) -> str:
    """The model with a symbolic batch dimension: inputs' and outputs' first dimension named, intermediate shapes
    dropped (ORT infers them again), and every constant Reshape target whose first entry is 1 given 0 (copy the
    input's batch)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(model)
    for value in list(m.graph.input) + list(m.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del m.graph.value_info[:]
    initializers = {i.name: i for i in m.graph.initializer}
    constants = {n.output[0]: n.attribute[0].t for n in m.graph.node if n.op_type == "Constant"}
    for node in m.graph.node:
        if node.op_type != "Reshape":
            continue
        tensor = initializers.get(node.input[1]) or constants.get(node.input[1])
        if tensor is None:
            continue
        target = numpy_helper.to_array(tensor).copy()
        if target.size and target[0] == 1:
            target[0] = 0
            tensor.CopyFrom(numpy_helper.from_array(target, tensor.name))
    path = os.path.join(directory, "batched.onnx")
    onnx.save(m, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2, help="cores to fill (intra-op threads, or Runs at once)")
    parser.add_argument("--runs", type=int, default=120, help="Runs per measurement, after 5 warm-up Runs")
    parser.add_argument("--imgsz", type=int, default=640, help="height and width where the model's are dynamic")
    parser.add_argument("--optimization", choices=sorted(LEVELS), default="all", help="graph optimization level")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a session config entry (repeatable)")
    parser.add_argument("--batch", type=int, default=1, help="also time N frames in one Run against one (N > 1)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.imgsz < 1 or args.batch < 1:
        parser.error("--threads, --runs, --imgsz and --batch must be at least 1")
    config = []
    for entry in args.config:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            parser.error(f"--config takes KEY=VALUE, not {entry!r}")
        config.append((key, value))

    single = session(args.model, 1, args.optimization, config)
    spec = single.get_inputs()[0]
    if spec.type != "tensor(float)" or len(spec.shape) != 4:
        parser.error(f"the model's input {spec.name} is {spec.type} {spec.shape}, not a float32 NCHW image")
    # A dynamic batch is 1, dynamic channels 3, a dynamic height or width --imgsz.
    defaults = [1, 3, args.imgsz, args.imgsz]
    shape = [d if isinstance(d, int) and d > 0 else defaults[i] for i, d in enumerate(spec.shape)]
    feed = {spec.name: np.random.default_rng(0).random(shape, dtype=np.float32)}

    def run_many(s: ort.InferenceSession, n: int, times: list[float] | None = None) -> None:
        for _ in range(n):
            start = time.perf_counter()
            s.run(None, feed)
            if times is not None:
                times.append(time.perf_counter() - start)

    run_many(single, 5)
    times: list[float] = []
    run_many(single, args.runs, times)

    wide = session(args.model, args.threads, args.optimization, config)
    run_many(wide, 5)
    start = time.perf_counter()
    run_many(wide, args.runs)
    one_run_fps = args.runs / (time.perf_counter() - start)

    # One session, several Runs at once (ORT sessions allow concurrent Run calls; numpy and ORT release the GIL).
    workers = [threading.Thread(target=run_many, args=(single, args.runs)) for _ in range(args.threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    side_by_side_fps = args.threads * args.runs / (time.perf_counter() - start)

    report = {
        "model": args.model, "threads": args.threads, "optimization": args.optimization, "config": args.config,
        "single_thread_run_ms": round(statistics.median(times) * 1000, 2),
        "one_run_fps": round(one_run_fps, 1), "side_by_side_fps": round(side_by_side_fps, 1),
        "ratio": round(side_by_side_fps / one_run_fps, 3),
    }
    if args.batch > 1:
        with tempfile.TemporaryDirectory() as directory:
            batched = session(batched_copy(args.model, directory), 1, args.optimization, config)
            many = {spec.name: np.random.default_rng(1).random([args.batch] + shape[1:], dtype=np.float32)}
            for _ in range(3):
                batched.run(None, many)
            per_frame: list[float] = []
            one: list[float] = []
            for _ in range(args.runs):
                start = time.perf_counter()
                batched.run(None, many)
                per_frame.append((time.perf_counter() - start) / args.batch)
                start = time.perf_counter()
                single.run(None, feed)
                one.append(time.perf_counter() - start)
        report.update({
            "batch": args.batch, "batch_frame_ms": round(statistics.median(per_frame) * 1000, 2),
            "frame_ms": round(statistics.median(one) * 1000, 2),
            "batch_ratio": round(statistics.median(per_frame) / statistics.median(one), 3),
        })
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
