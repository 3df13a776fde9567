#!/usr/bin/env python3
"""Throughput of the same detection loop through tritonclient (Open Inference Protocol) and through POST /v1/detect.

A perf_analyzer-style closed loop against a live `yoloswap serve`: --requests requests one after another on one
keep-alive connection, after --warmup unmeasured ones, for each of
  v1       POST /v1/detect with the JPEG as the body (geventhttpclient, the HTTP library tritonclient.http uses)
  v2-http  tritonclient.http infer, the JPEG as a BYTES input, binary tensor data both ways
  v2-raw   tritonclient.http infer, the letterboxed FP32 tensor (the client does the preprocessing), output0 back
  v2-grpc  tritonclient.grpc infer, the JPEG as BYTES (only with --grpc-url)
Prints requests/s and p50/p99 latency of each, and each one's throughput relative to v1 measured in the same run.
"""
import argparse
import math
import time

import numpy as np


def measure(name, call, warmup, requests):
    for _ in range(warmup):
        call()
    latencies = []
    started = time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"name": name, "rps": requests / elapsed, "p50": nearest_rank(latencies, 0.50),
            "p99": nearest_rank(latencies, 0.99)}


def nearest_rank(ordered, q):
    """The q-quantile by nearest rank, as the Swift benchmarks report it (p99 of 200: the 198th, not the 199th)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="host:port of the HTTP service")
    p.add_argument("--grpc-url")
    p.add_argument("--token", required=True, help="a viewer's bearer token")
    p.add_argument("--image", default="models/images/bus.jpg")
    p.add_argument("--model", default="default", help="the slot")
    p.add_argument("--imgsz", type=int, default=416)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args()

    import tritonclient.http as httpclient
    from geventhttpclient import HTTPClient
    from geventhttpclient.url import URL

    jpeg = open(args.image, "rb").read()
    auth = {"Authorization": f"Bearer {args.token}"}
    results = []

    v1 = HTTPClient.from_url(URL(f"http://{args.url}/"), concurrency=1, network_timeout=60)

    def detect():
        r = v1.post(f"/v1/detect?slot={args.model}", body=jpeg, headers=dict(auth, **{"Content-Type": "image/jpeg"}))
        assert r.status_code == 200, r.status_code
        r.read()
    results.append(measure("v1", detect, args.warmup, args.requests))

    client = httpclient.InferenceServerClient(url=args.url)
    image = httpclient.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
    results.append(measure("v2-http", lambda: client.infer(args.model, [image], headers=auth).as_numpy("boxes"),
                           args.warmup, args.requests))

    tensor = np.random.default_rng(1).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
    raw = httpclient.InferInput("images", list(tensor.shape), "FP32")
    raw.set_data_from_numpy(tensor)
    results.append(measure("v2-raw", lambda: client.infer(args.model, [raw], headers=auth).as_numpy("output0"),
                           args.warmup, args.requests))

    if args.grpc_url:
        import tritonclient.grpc as grpcclient
        gclient = grpcclient.InferenceServerClient(url=args.grpc_url)
        gimage = grpcclient.InferInput("image", [1], "BYTES")
        gimage.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
        gauth = {"authorization": f"Bearer {args.token}"}
        results.append(measure("v2-grpc", lambda: gclient.infer(args.model, [gimage], headers=gauth).as_numpy("boxes"),
                               args.warmup, args.requests))

    base = results[0]["rps"]
    print(f"{'loop':8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs v1':>6}")
    for r in results:
        print(f"{r['name']:8} {r['rps']:8.1f} {r['p50']:8.2f} {r['p99']:8.2f} {r['rps'] / base:6.2f}")


if __name__ == "__main__":
    main()
