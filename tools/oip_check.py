#!/usr/bin/env python3
"""Checks YOLOSwap's Open Inference Protocol (KServe v2 / Triton) with the unchanged `tritonclient` from PyPI.

Run against a live `yoloswap serve` (the IntegrationTests start it): every check prints `ok NAME` or `FAIL NAME:
why`; the last line is `N passed, N failed` and the exit status is 0 only when nothing failed.

    .venv/bin/python tools/oip_check.py --url 127.0.0.1:8080 --model models/yolov3-tiny-coco-416.onnx \
        --image models/images/bus.jpg --viewer-token T --operator-token T [--grpc-url 127.0.0.1:8001]

The slot checked is `default`, serving --model; --other-model (a file in the model repository, path relative to
it) is loaded into it and the slot is restored to --model at the end.
"""
import argparse
import json
import sys
import traceback
import urllib.request

import numpy as np
import onnxruntime as ort

RESULTS = []


def check(name):
    def wrap(fn):
        def run(*args):
            try:
                fn(*args)
                RESULTS.append(True)
                print(f"ok {name}", flush=True)
            except Exception as e:  # noqa: BLE001 — every failure is reported, none stops the others
                RESULTS.append(False)
                detail = "".join(traceback.format_exception_only(type(e), e)).strip()
                print(f"FAIL {name}: {detail}", flush=True)
        return run
    return wrap


def detect_v1(url, token, image_path):
    """POST /v1/detect, as a client of the v1 API would."""
    req = urllib.request.Request(f"http://{url}/v1/detect", data=open(image_path, "rb").read(), method="POST",
                                 headers={"Content-Type": "image/jpeg", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def reference_output(model_path, tensor):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: tensor})[0]


def expect_error(fn, status=None, contains=None):
    """Runs fn; it must raise the client's InferenceServerException (with that HTTP status / gRPC code)."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001
        if type(e).__name__ != "InferenceServerException":
            raise AssertionError(f"expected InferenceServerException, got {type(e).__name__}: {e}") from e
        if status is not None and str(e.status()) != status:
            raise AssertionError(f"expected status {status}, got {e.status()}: {e.message()}") from e
        if contains is not None and contains not in (e.message() or ""):
            raise AssertionError(f"expected '{contains}' in the message, got: {e.message()}") from e
        return e
    raise AssertionError("the call succeeded; an error was expected")


def run_checks(args, kind, client_module, url, auth_header):
    """The checks for one transport: `kind` is http or grpc."""
    # tritonclient.http's infer() writes Inference-Header-Content-Length into the headers dict it is given: each
    # call gets its own copy, or a later JSON request would carry an earlier request's header length.
    viewer_headers = {auth_header: f"Bearer {args.viewer_token}"}
    operator = {auth_header: f"Bearer {args.operator_token}"}
    client = client_module.InferenceServerClient(url=url)
    slot = "default"
    v1 = detect_v1(args.url, args.viewer_token, args.image)
    active_version = None

    @check(f"{kind}: is_server_live / is_server_ready")
    def health():
        assert client.is_server_live(headers=dict(viewer_headers))
        assert client.is_server_ready(headers=dict(viewer_headers))
    health()

    @check(f"{kind}: is_model_ready for the slot, and not for an unknown model or version")
    def ready():
        assert client.is_model_ready(slot, headers=dict(viewer_headers))
        assert not client.is_model_ready("no-such-slot", headers=dict(viewer_headers))
        assert not client.is_model_ready(slot, "no-such-version", headers=dict(viewer_headers))
    ready()

    @check(f"{kind}: get_model_metadata names the slot, its version and both input conventions")
    def metadata():
        nonlocal active_version
        meta = client.get_model_metadata(slot, headers=dict(viewer_headers))
        if kind == "grpc":
            from google.protobuf.json_format import MessageToDict
            meta = MessageToDict(meta, preserving_proto_field_name=True)
            for t in meta["inputs"] + meta["outputs"]:
                t["shape"] = [int(s) for s in t["shape"]]
        assert meta["name"] == slot, meta
        assert meta["platform"] == "onnxruntime_onnx", meta
        active_version = meta["versions"][0]
        assert v1["model"]["version"] == active_version, (v1["model"], meta["versions"])
        inputs = {t["name"]: t for t in meta["inputs"]}
        assert inputs["images"]["datatype"] == "FP32" and inputs["images"]["shape"] == [1, 3, 416, 416], inputs
        assert inputs["image"]["datatype"] == "BYTES", inputs
        outputs = {t["name"]: t for t in meta["outputs"]}
        assert {"output0", "boxes", "scores", "classes"} <= set(outputs), outputs
        assert outputs["classes"]["datatype"] == "INT32", outputs
        by_version = client.get_model_metadata(slot, active_version, headers=dict(viewer_headers))
        name = by_version["name"] if kind == "http" else by_version.name
        assert name == slot
        expect_error(lambda: client.get_model_metadata(slot, "no-such-version", headers=dict(viewer_headers)),
                     status="404" if kind == "http" else None, contains="no-such-version")
    metadata()

    @check(f"{kind}: get_model_config has Triton's shape, with the model's sha256")
    def config():
        cfg = client.get_model_config(slot, headers=dict(viewer_headers))
        if kind == "grpc":
            from google.protobuf.json_format import MessageToDict
            cfg = MessageToDict(cfg, preserving_proto_field_name=True)["config"]
        assert cfg["name"] == slot and cfg["platform"] == "onnxruntime_onnx", cfg
        assert cfg["parameters"]["sha256"]["string_value"] == v1["model"]["sha256"], cfg["parameters"]
        types = {t["name"]: t["data_type"] for t in cfg["input"]}
        assert types == {"images": "TYPE_FP32", "image": "TYPE_STRING"}, types
    config()

    rng = np.random.default_rng(7)
    tensor = rng.random((1, 3, 416, 416), dtype=np.float32)
    expected = reference_output(args.model, tensor)

    for binary in (True, False):
        if kind == "grpc" and not binary:
            continue  # gRPC has one encoding

        @check(f"{kind}: raw tensor infer ({'binary' if binary else 'JSON'}) equals onnxruntime to 1e-5, stamped")
        def raw():
            inp = client_module.InferInput("images", list(tensor.shape), "FP32")
            if kind == "http":
                inp.set_data_from_numpy(tensor, binary_data=binary)
                outputs = [client_module.InferRequestedOutput("output0", binary_data=binary)]
            else:
                inp.set_data_from_numpy(tensor)
                outputs = [client_module.InferRequestedOutput("output0")]
            result = client.infer(slot, [inp], outputs=outputs, headers=dict(viewer_headers))
            got = result.as_numpy("output0")
            assert got.shape == expected.shape and got.dtype == np.float32, (got.shape, got.dtype)
            diff = float(np.max(np.abs(got - expected)))
            assert np.allclose(got, expected, rtol=1e-5, atol=1e-5), f"max |diff| {diff}"
            response = result.get_response()
            if kind == "grpc":
                from google.protobuf.json_format import MessageToDict
                response = MessageToDict(response, preserving_proto_field_name=True)
                params = {k: list(v.values())[0] for k, v in response["parameters"].items()}
            else:
                params = response["parameters"]
            assert params["sha256"] == v1["model"]["sha256"], params
            assert int(params["generation"]) == v1["model"]["generation"], params
            assert response["model_version"] == active_version, response
        raw()

        @check(f"{kind}: BYTES image infer ({'binary' if binary else 'JSON, base64'}) equals POST /v1/detect")
        def image():
            data = open(args.image, "rb").read()
            if kind == "http" and not binary:
                import base64
                data = base64.b64encode(data)
            arr = np.array([data], dtype=np.object_)
            inp = client_module.InferInput("image", [1], "BYTES")
            if kind == "http":
                inp.set_data_from_numpy(arr, binary_data=binary)
                outputs = [client_module.InferRequestedOutput(n, binary_data=binary)
                           for n in ("boxes", "scores", "classes")]
            else:
                inp.set_data_from_numpy(arr)
                outputs = [client_module.InferRequestedOutput(n) for n in ("boxes", "scores", "classes")]
            result = client.infer(slot, [inp], outputs=outputs, headers=dict(viewer_headers),
                                  parameters={"conf": 0.25, "iou": 0.7, "max_det": 300})
            boxes, scores, classes = (result.as_numpy(n) for n in ("boxes", "scores", "classes"))
            dets = v1["detections"]
            assert len(dets) > 0 and boxes.shape == (len(dets), 4), (boxes.shape, len(dets))
            assert classes.dtype == np.int32 and scores.dtype == np.float32 and boxes.dtype == np.float32
            for i, d in enumerate(dets):
                b = d["box"]
                assert np.allclose(boxes[i], [b["x1"], b["y1"], b["x2"], b["y2"]], atol=1e-3), (i, boxes[i], b)
                assert abs(float(scores[i]) - d["confidence"]) < 1e-5 and int(classes[i]) == d["class_id"], (i, d)
        image()

    @check(f"{kind}: conf as a request parameter filters detections")
    def conf():
        inp = client_module.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([open(args.image, "rb").read()], dtype=np.object_))
        result = client.infer(slot, [inp], headers=dict(viewer_headers), parameters={"conf": 0.8})
        scores = result.as_numpy("scores")
        assert len(scores) < len(v1["detections"]) and all(s >= 0.8 for s in scores), scores
    conf()

    @check(f"{kind}: malformed tensors are refused with a clear client error")
    def malformed():
        bad = client_module.InferInput("images", [1, 3, 10, 10], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3, 10, 10), dtype=np.float32))
        expect_error(lambda: client.infer(slot, [bad], headers=dict(viewer_headers)),
                     status="400" if kind == "http" else "StatusCode.INVALID_ARGUMENT", contains="shape")
        wrong = client_module.InferInput("nope", [1], "BYTES")
        wrong.set_data_from_numpy(np.array([b"x"], dtype=np.object_))
        expect_error(lambda: client.infer(slot, [wrong], headers=dict(viewer_headers)), contains="image")
    malformed()

    @check(f"{kind}: auth failures as the client reports them")
    def auth():
        inp = client_module.InferInput("image", [1], "BYTES")
        inp.set_data_from_numpy(np.array([open(args.image, "rb").read()], dtype=np.object_))
        codes = {"http": ("401", "403"), "grpc": ("StatusCode.UNAUTHENTICATED", "StatusCode.PERMISSION_DENIED")}[kind]
        expect_error(lambda: client.infer(slot, [inp]), status=codes[0], contains="token")
        expect_error(lambda: client.infer(slot, [inp], headers={auth_header: "Bearer wrong"}), status=codes[0])
        expect_error(lambda: client.load_model(slot, headers=dict(viewer_headers)), status=codes[1], contains="operator")
        expect_error(lambda: client.unload_model(slot, headers=dict(viewer_headers)), status=codes[1])
    auth()

    @check(f"{kind}: load_model (config parameters) loads and switches; the old version stays addressable")
    def load():
        config = json.dumps({"default_model_filename": args.other_model,
                             "parameters": {"version": {"string_value": f"{kind}-other"},
                                            "allow_schema_change": {"string_value": "true"}}})
        client.load_model(slot, headers=operator, config=config)
        assert client.is_model_ready(slot, f"{kind}-other", headers=dict(viewer_headers))
        assert client.is_model_ready(slot, active_version, headers=dict(viewer_headers))  # the warm standby
        meta = client.get_model_metadata(slot, headers=dict(viewer_headers))
        versions = meta["versions"] if kind == "http" else list(meta.versions)
        assert versions[0] == f"{kind}-other", versions
        index = client.get_model_repository_index(headers=dict(viewer_headers))
        if kind == "grpc":
            index = [{"name": m.name, "version": m.version, "state": m.state} for m in index.models]
        assert {"name": slot, "version": f"{kind}-other", "state": "READY"} in [
            {k: m.get(k) for k in ("name", "version", "state")} for m in index], index
        expect_error(lambda: client.load_model(slot, headers=operator, config=json.dumps(
            {"default_model_filename": "no-such-model.onnx"})), contains="no-such-model.onnx")
    load()

    @check(f"{kind}: unload_model is refused for a serving slot unless forced; load_model brings it back")
    def unload():
        expect_error(lambda: client.unload_model(slot, headers=operator), contains="force")
        assert client.is_model_ready(slot, headers=dict(viewer_headers))
        if kind == "http":
            client.unload_model(slot, headers=operator, query_params={"force": "true"})
        else:  # tritonclient.grpc's unload_model sends no parameters of the caller's: a header says it
            client.unload_model(slot, headers=dict(operator, **{"x-yoloswap-force": "true"}))
        assert not client.is_model_ready(slot, headers=dict(viewer_headers))
        assert not client.is_server_ready(headers=dict(viewer_headers))
        config = json.dumps({"default_model_filename": args.model_in_repository,
                             "parameters": {"allow_schema_change": {"string_value": "true"}}})
        client.load_model(slot, headers=operator, config=config)
        assert client.is_model_ready(slot, headers=dict(viewer_headers)) and client.is_server_ready(headers=dict(viewer_headers))
    unload()

    @check(f"{kind}: statistics count the inferences")
    def stats():
        s = client.get_inference_statistics(slot, headers=dict(viewer_headers))
        if kind == "grpc":
            from google.protobuf.json_format import MessageToDict
            s = MessageToDict(s, preserving_proto_field_name=True)
        counts = sum(int(m.get("inference_count", 0)) for m in s["model_stats"])
        assert counts >= 4, s
    stats()


def grpc_hostile_checks(args):
    """Messages a hostile client could send, as raw bytes: refused before (or without) decoding them whole."""
    import grpc
    from tritonclient.grpc import service_pb2

    channel = grpc.insecure_channel(args.grpc_url, options=[("grpc.max_send_message_length", 64 << 20),
                                                            ("grpc.max_receive_message_length", 64 << 20)])
    viewer = (("authorization", f"Bearer {args.viewer_token}"),)

    def call(method, payload, metadata=()):
        """The RPC's status code name and details."""
        stub = channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            stub(payload, metadata=metadata, timeout=120)
            return "OK", ""
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""

    # 18 MiB of empty `inputs` entries (field 5, length 0): 2 bytes each on the wire, over a hundred decoded.
    empty_inputs = b"\x2a\x00" * (9 << 20)

    @check("grpc hostile: ModelInfer without a token is refused before its message is decoded")
    def unauthenticated():
        code, details = call("ModelInfer", empty_inputs)
        assert code == "UNAUTHENTICATED", (code, details)
    unauthenticated()

    @check("grpc hostile: ModelInfer with millions of empty inputs is refused, naming the field")
    def many_inputs():
        code, details = call("ModelInfer", empty_inputs, viewer)
        assert code == "INVALID_ARGUMENT" and "inputs has more than" in details, (code, details)
        # Millions of shape dimensions in one input, packed.
        shape = b"\x1a" + encode_varint(8 << 20) + b"\x01" * (8 << 20)
        code, details = call("ModelInfer", b"\x2a" + encode_varint(len(shape)) + shape, viewer)
        assert code == "INVALID_ARGUMENT" and "inputs.shape has more than" in details, (code, details)
        # A length that runs past the message's end.
        code, details = call("ModelInfer", b"\x2a\xff\xff\x03", viewer)
        assert code == "INVALID_ARGUMENT" and "malformed" in details, (code, details)
    many_inputs()

    @check("grpc hostile: methods not served are refused (UNIMPLEMENTED); an unknown model is not ready")
    def unserved():
        code, _ = call("TraceSetting", b"\x0a\x00" * (1 << 20), viewer)
        assert code == "UNIMPLEMENTED", code
        ready = service_pb2.ModelReadyRequest(name="x" * 100_000).SerializeToString()
        code, details = call("ModelReady", ready, viewer)
        assert code == "OK", (code, details)
        code, details = call("ModelMetadata", service_pb2.ModelMetadataRequest(name="x" * 100_000)
                             .SerializeToString(), viewer)
        assert code == "NOT_FOUND" and len(details.encode()) <= 1024, (code, len(details))
    unserved()


def encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tls_checks(args):
    """The gRPC endpoint with TLS: a client that trusts the certificate is served; a plaintext one is not."""
    import tritonclient.grpc as grpc_client
    viewer = {"authorization": f"Bearer {args.viewer_token}"}

    @check("grpc+tls: a client trusting the certificate is served")
    def trusted():
        client = grpc_client.InferenceServerClient(url=args.grpc_url, ssl=True, root_certificates=args.tls_root)
        assert client.is_server_live(headers=viewer)
        assert client.get_model_metadata("default", headers=viewer).name == "default"
    trusted()

    @check("grpc+tls: a plaintext client is refused")
    def plaintext():
        client = grpc_client.InferenceServerClient(url=args.grpc_url)
        expect_error(lambda: client.is_server_live(headers=viewer, client_timeout=10))
    plaintext()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="host:port of the HTTP service")
    p.add_argument("--grpc-url", help="host:port of the gRPC service (its checks run only when given)")
    p.add_argument("--model", required=True, help="the ONNX file the slot 'default' serves (for onnxruntime)")
    p.add_argument("--model-in-repository", default="yolov3-tiny-coco-416.onnx",
                   help="the same file, relative to the model repository")
    p.add_argument("--other-model", default="yolov3-tiny-coco-320.onnx", help="a second model, in the repository")
    p.add_argument("--image", required=True)
    p.add_argument("--tls-root", help="with --grpc-url: only check gRPC over TLS, trusting this PEM certificate")
    p.add_argument("--viewer-token", required=True)
    p.add_argument("--operator-token", required=True)
    args = p.parse_args()

    if args.tls_root:
        tls_checks(args)
    else:
        import tritonclient.http as http_client
        run_checks(args, "http", http_client, args.url, "Authorization")
    if args.grpc_url and not args.tls_root:
        import tritonclient.grpc as grpc_client
        run_checks(args, "grpc", grpc_client, args.grpc_url, "authorization")
        grpc_hostile_checks(args)
    passed = sum(RESULTS)
    print(f"{passed} passed, {len(RESULTS) - passed} failed")
    return 0 if passed == len(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
