#!/usr/bin/env python3
"""An MQTT peer for the fleet tests and benchmark, on paho-mqtt (an independent client: the devices use libmosquitto).

Connection options come first (--client-id ID: a fixed id with a persistent session, which the broker keeps across
the peer's reconnections and, with its persistence, its own restarts; `collect` then fails if a reconnection finds
the session gone), then one command:

  publish TOPIC FILE [--retain]
      Publishes FILE's bytes with QoS 1 and waits for the broker's PUBACK.
  exchange --subscribe TOPIC --publish TOPIC FILE [--publish TOPIC FILE ...] --count N
      Subscribes (and waits for the SUBACK), publishes the files in order, then prints the first N JSON messages
      received on TOPIC as a JSON list.
  wait-status --devices D1,D2 --generation G [--sha256 S] [--state online|offline]
      Waits until each device's retained status topic says STATE and, online, that its desired state has generation
      G, converged (and, with --sha256, that slot `default` serves that model); prints the statuses as JSON, exit 0.
      Prints the last statuses seen and exits 1 at the timeout.
  collect --subscribe FILTER --ready FILE --until-event TYPE
      Subscribes with QoS 1 (and waits for the SUBACK), creates FILE, then collects the JSON messages received until
      one on an `.../events` topic has that `type` (a video stream's `ended`); prints them as a JSON list of
      {"topic", "message"}. Exits 1 at the timeout, printing what it received.
  rollout --devices D1,D2 --topic TOPIC --files F1,F2,... --sha256s S1,S2,...
      For the benchmark: publishes each retained document in turn and waits until every device reports it
      (generation i+1, converged, slot `default` serving S_i); prints each rollout's seconds as a JSON list.
"""
import argparse
import json
import ssl
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt


def connect(args):
    protocol = mqtt.MQTTv5 if args.protocol == "5" else mqtt.MQTTv311
    if args.client_id and protocol != mqtt.MQTTv311:
        sys.exit("fleet_peer: --client-id (a persistent session) is for MQTT 3.1.1")
    # With --client-id, a persistent session: the broker keeps the subscriptions and queues QoS 1 messages while the
    # peer is away (a broker restart included, with the broker's persistence), and paho reconnects by itself.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id or f"peer-{uuid.uuid4().hex[:12]}",
                         protocol=protocol, clean_session=False if args.client_id else None)
    if args.cafile:
        client.tls_set(ca_certs=args.cafile, cert_reqs=ssl.CERT_REQUIRED)
    if args.username:
        client.username_pw_set(args.username, args.password)
    connected = threading.Event()
    # Whether the broker still had the session, at each connection (the first one's is not checked).
    client.sessions_present = []

    def on_connect(c, u, flags, reason, props):
        c.sessions_present.append(bool(flags.session_present))
        connected.set()
    client.on_connect = on_connect
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not connected.wait(args.timeout):
        sys.exit(f"fleet_peer: no connection to {args.host}:{args.port}")
    return client


def subscribe(client, topics, timeout):
    """Subscribes with QoS 1 and waits for the SUBACK."""
    done = threading.Event()
    client.on_subscribe = lambda c, u, mid, codes, props: done.set()
    client.subscribe([(topic, 1) for topic in topics])
    if not done.wait(timeout):
        sys.exit("fleet_peer: no SUBACK")


def publish(client, topic, payload, retain, timeout):
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(timeout)
    if not info.is_published():
        sys.exit(f"fleet_peer: no PUBACK for {topic}")


class StatusBoard:
    """The latest retained status per device."""

    def __init__(self, client, prefix, devices):
        self.lock = threading.Condition()
        self.latest = {}
        self.topics = {f"{prefix}/{device}/status": device for device in devices}
        client.on_message = self.received

    def received(self, client, userdata, message):
        device = self.topics.get(message.topic)
        if device is None:
            return
        try:
            status = json.loads(message.payload)
        except ValueError:
            return
        with self.lock:
            self.latest[device] = status
            self.lock.notify_all()

    def wait(self, condition, deadline):
        with self.lock:
            while not all(condition(self.latest.get(device)) for device in self.topics.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.lock.wait(left)
            return True


def reports(generation, sha256, state):
    def check(status):
        if status is None or status.get("state") != state:
            return False
        if state == "offline":
            return True
        desired = status.get("desired") or {}
        if desired.get("observed_generation") != generation or not desired.get("converged"):
            return False
        if sha256 is None:
            return True
        slots = {slot["name"]: slot for slot in status.get("slots") or []}
        return ((slots.get("default") or {}).get("active") or {}).get("sha256") == sha256
    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cafile")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--protocol", default="3.1.1")
    parser.add_argument("--prefix", default="yoloswap/v1")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--client-id", help="a fixed client id with a persistent session (MQTT 3.1.1)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("publish")
    p.add_argument("topic")
    p.add_argument("file")
    p.add_argument("--retain", action="store_true")
    p = commands.add_parser("exchange")
    p.add_argument("--subscribe", required=True)
    p.add_argument("--publish", nargs=2, action="append", metavar=("TOPIC", "FILE"), required=True)
    p.add_argument("--count", type=int, required=True)
    p = commands.add_parser("wait-status")
    p.add_argument("--devices", required=True)
    p.add_argument("--generation", type=int)
    p.add_argument("--sha256")
    p.add_argument("--state", default="online")
    p = commands.add_parser("collect")
    p.add_argument("--subscribe", required=True)
    p.add_argument("--ready", required=True)
    p.add_argument("--until-event", required=True)
    p = commands.add_parser("rollout")
    p.add_argument("--devices", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--files", required=True)
    p.add_argument("--sha256s", required=True)
    args = parser.parse_args()

    client = connect(args)
    deadline = time.monotonic() + args.timeout
    if args.command == "publish":
        with open(args.file, "rb") as f:
            publish(client, args.topic, f.read(), args.retain, args.timeout)
    elif args.command == "exchange":
        received = []
        arrived = threading.Condition()

        def on_message(c, u, message):
            with arrived:
                received.append(json.loads(message.payload))
                arrived.notify_all()
        client.on_message = on_message
        subscribe(client, [args.subscribe], args.timeout)
        for topic, file in args.publish:
            with open(file, "rb") as f:
                publish(client, topic, f.read(), False, args.timeout)
        with arrived:
            while len(received) < args.count and time.monotonic() < deadline:
                arrived.wait(max(deadline - time.monotonic(), 0.01))
        print(json.dumps(received))
        if len(received) < args.count:
            sys.exit(f"fleet_peer: {len(received)} of {args.count} messages")
    elif args.command == "collect":
        received = []
        arrived = threading.Condition()
        ended = threading.Event()

        def on_message(c, u, message):
            payload = json.loads(message.payload)
            with arrived:
                received.append({"topic": message.topic, "message": payload})
            if message.topic.endswith("/events") and payload.get("type") == args.until_event:
                ended.set()
        client.on_message = on_message
        subscribe(client, [args.subscribe], args.timeout)
        open(args.ready, "w").close()
        finished = ended.wait(max(deadline - time.monotonic(), 0.01))
        with arrived:
            print(json.dumps(received))
        if not finished:
            sys.exit(f"fleet_peer: no '{args.until_event}' event in {len(received)} messages")
        if args.client_id and not all(client.sessions_present[1:]):
            sys.exit(f"fleet_peer: a reconnection found no session (session present: {client.sessions_present})")
    elif args.command == "wait-status":
        devices = args.devices.split(",")
        board = StatusBoard(client, args.prefix, devices)
        subscribe(client, list(board.topics), args.timeout)
        ok = board.wait(reports(args.generation, args.sha256, args.state), deadline)
        print(json.dumps(board.latest))
        if not ok:
            sys.exit(1)
    elif args.command == "rollout":
        devices = args.devices.split(",")
        board = StatusBoard(client, args.prefix, devices)
        subscribe(client, list(board.topics), args.timeout)
        seconds = []
        for index, (file, sha256) in enumerate(zip(args.files.split(","), args.sha256s.split(","))):
            with open(file, "rb") as f:
                document = f.read()
            started = time.monotonic()
            publish(client, args.topic, document, True, args.timeout)
            if not board.wait(reports(index + 1, sha256, "online"), started + args.timeout):
                print(json.dumps({"seconds": seconds, "stuck": board.latest}))
                sys.exit(1)
            seconds.append(time.monotonic() - started)
        print(json.dumps(seconds))
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
