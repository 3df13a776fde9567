#!/usr/bin/env python3
"""An RTSP camera for the stream tests: GStreamer's RTSP server serving one JPEG photo as an endless live MJPEG stream
(RTP/JPEG, RFC 2435) at a fixed frame rate, at rtsp://127.0.0.1:PORT/cam.

Run it with Debian's python3 (/usr/bin/python3), not the tools venv: the GObject bindings (python3-gi) and
gst-rtsp-server are Debian's packages. Prints "ready" on stdout once it listens; runs until killed.

    /usr/bin/python3 tools/rtsp_camera.py --photo models/images/zidane.jpg --port 8554 --fps 15
"""
import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", required=True, help="a JPEG photo (RTP/JPEG: sides multiples of 8, at most 2040)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--path", default="/cam")
    args = parser.parse_args()
    if '"' in args.photo:
        sys.exit("rtsp_camera: the photo's path may not hold a double quote")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    # The photo decoded once and repeated as a live source at the frame rate (imagefreeze stamps the frames on the
    # frame-rate grid, and the server sends each at its time, as a camera does), encoded again with the standard
    # Huffman tables that RTP/JPEG assumes. One pipeline for all clients (shared): a client that reconnects joins the
    # running stream.
    factory.set_launch(
        f'( filesrc location="{args.photo}" ! jpegdec ! imagefreeze is-live=true '
        f"! video/x-raw,framerate={args.fps}/1 ! jpegenc quality=95 ! rtpjpegpay name=pay0 pt=26 )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        sys.exit(f"rtsp_camera: cannot listen on 127.0.0.1:{args.port}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
