"""Writes the fuzz targets' seed corpora under Fuzz/Corpus/<target>/ (`make fuzz-seeds`).

Every seed is made here, from generated pixels (numpy + OpenCV's encoders, which the test suite also uses to make its
JPEGs), hand-built chunks and the repository's own example configuration: nothing is downloaded. The seeds are small
(a few hundred bytes to a few KiB) so that the fuzzer runs fast and mutates their structure rather than their pixels.
The signature and key file seeds are written by FuzzSigningFiles itself (FUZZ_WRITE_SEEDS), with the project's
signing API.

Usage: python Fuzz/make_seeds.py OUT_DIR   (OUT_DIR is Fuzz/Corpus)
"""
import os
import struct
import sys
import zlib

import cv2
import numpy as np

OUT = sys.argv[1]


def image(w, h, seed):
    """Gradients plus seeded noise, as Tests/TestSupport/GeneratedJPEGs.swift makes them (BGR for OpenCV)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // max(w + h - 2, 1)], -1)
    return np.clip(base + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)


def jpeg(img, *params):
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 75, *params])
    assert ok
    return data.tobytes()


def png(img, *params):
    ok, data = cv2.imencode(".png", img, list(params))
    assert ok
    return data.tobytes()


def tiff_orientation(value):
    """A little-endian TIFF header with one IFD entry: Orientation (0x0112), SHORT, 1 value."""
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) \
        + struct.pack("<I", 0)


def with_exif_jpeg(data, orientation):
    """Inserts an APP1 Exif segment after SOI."""
    payload = b"Exif\x00\x00" + tiff_orientation(orientation)
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def with_exif_png(data, orientation):
    """Inserts an eXIf chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return data[:33] + chunk(b"eXIf", tiff_orientation(orientation)) + data[33:]


def palette_png(w, h, interlace):
    """An 8-bit palette PNG (OpenCV writes none), optionally Adam7-interlaced (only the first pass is real data)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, interlace)
    plte = bytes(range(0, 48))
    rows = b"".join(b"\x00" + bytes((x + y) % 16 for x in range(w)) for y in range(h))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", plte) + chunk(b"IDAT", zlib.compress(rows)) \
        + chunk(b"IEND", b"")


def progressive_scans(scans):
    """HostileImages.progressiveJPEG: an 8×8 grey progressive JPEG of `scans` DC scans."""
    out = b"\xff\xd8" + b"\xff\xdb\x00\x43\x00" + bytes([1] * 64)
    out += bytes([0xFF, 0xC2, 0x00, 0x0B, 8, 0x00, 0x08, 0x00, 0x08, 1, 1, 0x11, 0])
    out += bytes([0xFF, 0xC4, 0x00, 0x14, 0x00, 1] + [0] * 15 + [0x00])
    out += bytes([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 0, 0x00, 0x7F]) * scans
    return out + b"\xff\xd9"


def write(target, name, data):
    folder = os.path.join(OUT, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def images():
    """Named small JPEGs and PNGs covering the decoders' paths: chroma subsampling, greyscale, restarts, progressive,
    EXIF orientations, bit depths, alpha, palette, interlacing."""
    s = cv2.IMWRITE_JPEG_SAMPLING_FACTOR
    out = {
        "baseline-420-24x16.jpg": jpeg(image(24, 16, 1)),
        "baseline-444-17x9.jpg": jpeg(image(17, 9, 2), s, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        "baseline-422-33x20.jpg": jpeg(image(33, 20, 3), s, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
        "gray-15x11.jpg": jpeg(cv2.cvtColor(image(15, 11, 4), cv2.COLOR_BGR2GRAY)),
        "restart-420-40x24.jpg": jpeg(image(40, 24, 5), cv2.IMWRITE_JPEG_RST_INTERVAL, 1),
        "progressive-420-32x24.jpg": jpeg(image(32, 24, 6), cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "progressive-3-scans.jpg": progressive_scans(3),
        "rgb-20x14.png": png(image(20, 14, 9)),
        "gray-13x7.png": png(cv2.cvtColor(image(13, 7, 10), cv2.COLOR_BGR2GRAY)),
        "rgba-9x9.png": png(cv2.cvtColor(image(9, 9, 11), cv2.COLOR_BGR2BGRA)),
        "rgb16-6x5.png": png(image(6, 5, 12).astype(np.uint16) * 257),
        "palette-7x5.png": palette_png(7, 5, 0),
        "palette-interlaced-5x3.png": palette_png(5, 3, 1),
        "header-only-huge.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + struct.pack(">II", 0xFFFFFFFF, 0xFFFFFFFF),
    }
    for orientation in (3, 6, 8):
        out[f"exif{orientation}-24x16.jpg"] = with_exif_jpeg(jpeg(image(24, 16, 20 + orientation)), orientation)
        out[f"exif{orientation}-20x14.png"] = with_exif_png(png(image(20, 14, 30 + orientation)), orientation)
    return out


def multipart(boundary, parts, preamble=b"", close=True):
    body = preamble
    for headers, content in parts:
        body += b"--" + boundary + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + content + b"\r\n"
    if close:
        body += b"--" + boundary + b"--\r\n"
    return body


def model(flags, input_shape, output_shape, metadata, options, source, dynamic, values, imgsz=None):
    """One FuzzModelOutput input (its layout is documented in FuzzModelOutput.swift). `flags`: input type
    (flags % 3: float32, float16, other), 0x08 imgsz given, 0x10 output format forced (flags >> 5: yolov5, yolov8,
    yolov10)."""
    out = bytes([flags]) + b"".join(struct.pack("<h", d) for d in input_shape)
    out += bytes([len(output_shape)]) + b"".join(struct.pack("<i", d) for d in output_shape)
    for key in ("names", "imgsz", "stride", "end2end"):
        text = metadata.get(key)
        out += b"\x00" if text is None else bytes([len(text) + 1]) + text.encode()
    if imgsz is not None:
        out += struct.pack("<HH", imgsz[0] + 16, imgsz[1] + 16)
    confidence, iou, max_det, agnostic, classes = options
    out += bytes([confidence, iou]) + struct.pack("<H", max_det - 1) + bytes([agnostic, len(classes)])
    out += b"".join(struct.pack("<H", c + 2) for c in classes)
    out += struct.pack("<HH", source[0] - 1, source[1] - 1)
    out += b"".join(struct.pack("<H", d) for d in dynamic) + b"\x00"  # 0x00: the run returns the declared shape
    return out + b"".join(struct.pack("<f", v) for v in values)


def main():
    found = images()
    for name, data in found.items():
        write("FuzzImageDecode", name, data + b"\x00")
    write("FuzzImageDecode", "exif6-24x16-twothreads.jpg", found["exif6-24x16.jpg"] + b"\x04")
    write("FuzzImageDecode", "baseline-420-24x16-scaled.jpg", found["baseline-420-24x16.jpg"] + b"\x02")

    # FuzzFusedLetterbox: selector byte (input side, EXIF), then the file. Larger JPEGs so the fused path's row
    # hand-off runs (it takes baseline JPEGs only).
    fused = {
        "baseline-420-96x64.jpg": jpeg(image(96, 64, 40)),
        "baseline-444-70x90.jpg": jpeg(image(70, 90, 41), cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                       cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        "restart-420-64x48.jpg": jpeg(image(64, 48, 42), cv2.IMWRITE_JPEG_RST_INTERVAL, 2),
        "gray-50x30.jpg": jpeg(cv2.cvtColor(image(50, 30, 43), cv2.COLOR_BGR2GRAY)),
        "exif6-40x30.jpg": with_exif_jpeg(jpeg(image(40, 30, 44)), 6),
        "progressive-32x24.jpg": found["progressive-420-32x24.jpg"],
        "rgb-20x14.png": found["rgb-20x14.png"],
    }
    for i, (name, data) in enumerate(fused.items()):
        write("FuzzFusedLetterbox", name, bytes([(i * 37) % 256]) + data)

    # FuzzMultipart: chunk-size byte, Content-Type line, body.
    jpg = found["baseline-420-24x16.jpg"]
    cases = {
        "simple": (b"multipart/form-data; boundary=XyZ", multipart(
            b"XyZ", [([b'Content-Disposition: form-data; name="image"; filename="a.jpg"',
                       b"Content-Type: image/jpeg"], jpg)])),
        "quoted-boundary-two-parts": (b'multipart/form-data; boundary="a b:c?"', multipart(
            b"a b:c?", [([b'Content-Disposition: form-data; name="note"'], b"hello"),
                        ([b"content-disposition: form-data; NAME=Image"], b"\x89PNG\r\n--a b:c")],
            preamble=b"preamble text\r\n")),
        "unterminated": (b"multipart/form-data; charset=utf-8; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
                         multipart(b"----WebKitFormBoundary7MA4YWxkTrZu0gW",
                                   [([b'Content-Disposition: form-data; name="image"'], b"\xff\xd8\xff")],
                                   close=False)),
        "empty-field": (b"multipart/form-data; boundary=b", multipart(
            b"b", [([b'Content-Disposition: form-data; name="image"'], b"")])),
    }
    for i, (name, (content_type, body)) in enumerate(cases.items()):
        write("FuzzMultipart", name, bytes([i * 50 + 7]) + content_type + b"\n" + body)

    # FuzzConfiguration: the example configuration and small documents around the range checks.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "yoloswap.example.yaml"), "rb") as f:
        write("FuzzConfiguration", "example.yaml", f.read())
    configs = {
        "limits.yaml": b"server: { port: 65535, max_body_mb: 1024, idle_timeout_s: 3600, metrics_require_token: true }\n"
                       b"hotswap: { warmup_timeout_s: 86400.0, standby: 3.5, request_timeout_ms: 10000,"
                       b" memory_budget_mb: 4096, policy: auto, queue_capacity: 100000, warmup_runs: 0 }\n",
        "keys.yaml": b"trusted_keys: [keys/a.pub, /etc/yoloswap/b.pub]\nrequire_signature: true\n"
                     b"anonymous_detect: false\nslots:\n  line1: { model: v8n.onnx, version: '2', sha256: "
                     + b"ab" * 32 + b" }\nroutes: { wo-17: line1 }\n",
        "empty.yaml": b"",
    }
    for name, data in configs.items():
        write("FuzzConfiguration", name, data)

    # FuzzModelOutput: the three layouts, static and dynamic, with and without metadata.
    names5 = "{0: 'person', 1: 'bicycle', 2: 'car', 3: 'motorcycle', 4: 'airplane'}"
    rng = np.random.default_rng(7)
    vals = lambda n: [float(v) for v in rng.random(n)]  # noqa: E731
    opts = (64, 178, 300, 0, ())
    write("FuzzModelOutput", "yolov8-static", model(0, (1, 3, 64, 64), (1, 84, 21), {}, opts, (640, 480), (),
                                                    vals(84 * 4)))
    write("FuzzModelOutput", "yolov5-dynamic-names", model(0, (1, 3, -1, -1), (1, -1, 10),
                                                           {"names": names5, "imgsz": "[320, 256]", "stride": "32"},
                                                           (10, 128, 5, 1, (0, 3)), (1280, 720), (30,), vals(10 * 3)))
    write("FuzzModelOutput", "yolov10-end2end", model(1, (1, 3, 96, 96), (1, 300, 6),
                                                      {"end2end": "True", "names": "['a', 'b', 'c']"},
                                                      opts, (96, 96), (), [10, 10, 50, 50, 0.9, 2, 5, 5, 9, 9, 0.8, 1]))
    write("FuzzModelOutput", "yolov8-imgsz-forced", model(0x39, (1, 3, -1, -1), (1, 6, -1), {}, opts,
                                                          (33, 77), (8,), vals(6 * 8), imgsz=(160, 128)))


main()
