# YOLOSwap — the two commands: `make run` and `make test`. Both install what is missing first (scripts/setup).
SHELL := /bin/bash
SWIFT ?= swift
MODEL ?= models/yolov3-tiny-coco-416.onnx
HOSTILE_DIR ?= out/hostile-models
IMAGES ?= models/images/bus.jpg models/images/zidane.jpg models/images/dog.jpg models/images/person.jpg \
          models/images/horses.jpg models/images/eagle.jpg models/images/giraffe.jpg models/images/kite.jpg

.PHONY: all setup build build-debug run detect-samples test test-asan test-hostile hostile-models chaos faults bench \
	bench-configmap bench-release bench-mqtt bench-stream bench-oip grpc-generate fuzz fuzz-build fuzz-smoke test-v4l2 \
	fuzz-seeds test-console clean v4l2-vm

all: build

setup:
	@bash scripts/setup

build: setup
	$(SWIFT) build -c release --product yoloswap

build-debug: setup
	$(SWIFT) build --build-tests

# Runs the main job: the HTTP service with the default slot (yolov3-tiny COCO) on 127.0.0.1:8080, state in ./var.
run: build
	.build/release/yoloswap serve

# The detection CLI on the sample photos; annotated images go to out/.
detect-samples: build
	.build/release/yoloswap detect --model $(MODEL) --save out $(IMAGES)
	@echo "annotated images written to out/"

# The whole suite (Swift Testing), after set-up: the main run, then three groups apart (each says why). Integration
# tests run the real binary and the Python reference; the hot-swap suites (fake backends and real ONNX Runtime) and
# the two-thread JPEG decode then run again under ThreadSanitizer (its own build folder, three runs); last, the V4L2
# camera check in a virtual machine.
# The V4L2 check's machine (the suite's last step), checked once setup has run and before the build: setup warns and
# goes on without it (make run needs none), and the suite would otherwise fail only after its 20-odd minutes.
# SKIP_V4L2=1 runs the suite without the check.
v4l2-vm: setup
	@[ -n "$(SKIP_V4L2)" ] || test -f .cache/v4l2-vm/stamp || { echo "make test: the V4L2 check's virtual machine" \
		"is missing: scripts/setup could not prepare it (its warning above says why; rerun scripts/setup, or" \
		"SKIP_V4L2=1 make test to run the rest)" >&2; exit 1; }

test: v4l2-vm build-debug
	$(SWIFT) test --skip-build --skip 'ORTBackendTests|MQTTClientTests|ProcessMemoryTests|ReleaserTests|BenchmarkSmokeTests/benchStream'
	# Apart: its tests measure the process's memory, which the other suites, running in parallel, would move.
	$(SWIFT) test --skip-build --filter ORTBackendTests
	# Apart and one at a time: ProcessMemoryTests measures the process's RSS too; ReleaserTests keeps eight threads
	# spinning on sched_yield for its whole run, which beside the other suites took 120-310 s and starved their tasks.
	$(SWIFT) test --skip-build --no-parallel --filter 'ProcessMemoryTests|ReleaserTests'
	# Apart: bench-stream's swaps load at nice 10, below every other process; beside the main run's suites one
	# warm-up took over 9 s and the 12-second paced run saw no switch.
	$(SWIFT) test --skip-build --filter 'BenchmarkSmokeTests/benchStream'
	# Apart, and bounded: in one CI run beside the other suites, an MQTT 5 client's CONNECT was refused by the broker
	# as a protocol error for minutes and the test never ended; alone it passes (see README → Tests). A cause found
	# since (a publication written ahead of the CONNECT) is fixed; apart until it has passed beside the others.
	timeout 300 $(SWIFT) test --skip-build --filter MQTTClientTests
	$(SWIFT) build --sanitize=thread --scratch-path .build-tsan --build-tests
	TSAN_OPTIONS="suppressions=$(CURDIR)/tsan.supp halt_on_error=1" \
		$(SWIFT) test --sanitize=thread --scratch-path .build-tsan --skip-build --filter HotSwapTests
	# Separately, for the same reason as the decode suites below: hot swapping real ORT sessions is CPU-bound.
	TSAN_OPTIONS="suppressions=$(CURDIR)/tsan.supp halt_on_error=1" \
		$(SWIFT) test --sanitize=thread --scratch-path .build-tsan --skip-build --filter ORTBackendTests
	# Separately: their CPU-bound tests, slowed down by TSan, would hold the test runner's threads for seconds and
	# starve the hot-swap suite's timing-sensitive ones.
	TSAN_OPTIONS="suppressions=$(CURDIR)/tsan.supp halt_on_error=1" \
		$(SWIFT) test --sanitize=thread --scratch-path .build-tsan --skip-build \
		--filter 'PipelinedJPEGDecodingTests|FusedLetterboxTests'
	# A stream from a V4L2 camera: a virtual machine whose kernel's vivid driver is the camera runs the debug
	# yoloswap built above (scripts/v4l2-check, under software emulation; its time is in the README).
	[ -n "$(SKIP_V4L2)" ] || bash scripts/v4l2-check .build/debug/yoloswap

# The same V4L2 check with the release build.
test-v4l2: build
	bash scripts/v4l2-check

# The whole suite under AddressSanitizer (its own build folder; not part of `make test`: the build alone takes longer
# than the rest of CI), the integration tests' server and CLI processes included (they run the yoloswap built beside
# the tests). Suites run one at a time. allocator_may_return_null: a hostile model's 4 EiB allocation must fail as
# malloc does (ORT reports it), not abort the process as ASan's allocator does by default. Skipped: ProcessMemoryTests,
# which checks that freed memory goes back to the OS — ASan's allocator keeps it in quarantine by design.
test-asan: setup
	$(SWIFT) build --sanitize=address --scratch-path .build-asan --build-tests
	ASAN_OPTIONS="detect_leaks=0 halt_on_error=1 allocator_may_return_null=1" \
		$(SWIFT) test --sanitize=address --scratch-path .build-asan --skip-build --no-parallel --skip ProcessMemoryTests

# Hostile ONNX models (imgsz 0, NaN outputs, external data outside the repository, ...) and their manifest, for a look
# by hand; the tests generate their own.
hostile-models: setup
	.venv/bin/python tools/make_hostile_models.py --output $(HOSTILE_DIR)

# The hostile-model tests alone (they run in `make test` too): schemas and decoders, then every hostile model loaded
# into a slot of the real server under traffic, and opened by the CLI.
test-hostile: build-debug
	$(SWIFT) test --skip-build --filter 'HostileModel'

# The web console's tests alone (they run in `make test` too): its API in process, the event stream over a socket, and
# the page in Debian's headless Chromium against the real binary (screenshots in out/console).
test-console: build-debug
	$(SWIFT) test --skip-build --filter 'ConsoleAPITests|EventStreamTests|EventFeedTests|ConsoleBrowserTests'

# The kill -9 chaos loop (README → Tests): the real server under detection load, killed with SIGKILL at random moments
# of load / switch / rollback and restarted, CHAOS_ITERATIONS times; `make test` runs it with 10.
CHAOS_ITERATIONS ?= 200
chaos: build-debug
	CHAOS_ITERATIONS=$(CHAOS_ITERATIONS) $(SWIFT) test --skip-build --filter ChaosTests

# Storage faults alone (also part of `make test`): the state directory on a full tmpfs, the state and audit databases
# locked by another process past the busy timeout.
faults: build-debug
	$(SWIFT) test --skip-build --filter StorageFaultTests

# libFuzzer targets, one per parser of untrusted bytes (README → Fuzzing), built with coverage and AddressSanitizer in
# .build-fuzz; each runs FUZZ_SECONDS from the committed seeds plus earlier runs' corpus (.build-fuzz/corpus).
FUZZ_SECONDS ?= 600
fuzz-build: setup
	Fuzz/fuzz.sh build

fuzz: fuzz-build
	Fuzz/fuzz.sh run $(FUZZ_SECONDS)

# A short run: each target for 20 s (not part of `make test`: the instrumented build alone takes longer than CI allows).
fuzz-smoke: fuzz-build
	Fuzz/fuzz.sh run 20

# Rewrites the committed seed corpora (Fuzz/Corpus) from generated images, the example configuration and signing keys.
fuzz-seeds: fuzz-build
	Fuzz/fuzz.sh seeds

# Performance figures for the README (see README → Performance).
bench: build
	.build/release/yoloswap bench --model $(MODEL) --threads 2 --runs 200 models/images/bus.jpg
	.venv/bin/python tools/reference.py --model $(MODEL) --threads 2 --bench 200 models/images/bus.jpg
	.build/release/yoloswap bench-swap --swaps 20 --rollbacks 5 --concurrency 4 --interval-ms 500

# Time from a ConfigMap swap (kubelet's atomic-writer rename) to a converged slot, against the real server (README →
# Desired state). SWAPS swaps, alternating two models.
SWAPS ?= 20
bench-configmap: build-debug
	YOLOSWAP_CONFIGMAP_SWAPS=$(SWAPS) $(SWIFT) test --skip-build --filter ConfigMapBenchmark

# What a 100 % shadow release costs the baseline's answers, at a load with headroom and under saturation (README →
# Performance): alternating blocks without and with the release, p50/p99 and the mirror's shed counts.
bench-release: build
	.build/release/yoloswap bench-release --requests 200 --rounds 3 --saturation 6
# Time for a three-device MQTT fleet to converge on a new retained group document (README → Running at scale), against
# a real Mosquitto broker: ROLLOUTS rollouts, alternating two models. With ROLLOUTS=500 it is the fleet's soak run.
ROLLOUTS ?= 20
bench-mqtt: build-debug
	YOLOSWAP_MQTT_ROLLOUTS=$(ROLLOUTS) $(SWIFT) test --skip-build --filter MQTTFleetBenchmark
# A video stream end to end (README → Performance): the 300-frame test video (made here by ffmpeg from a sample photo)
# with yolov3-tiny 416, against the Python cv2.VideoCapture + reference pipeline + ORT loop in the same run; then, at
# a camera's 30 fps, the frame latency around 10 swaps and ROLLBACKS rollbacks against a run with none, STREAM_TRIALS
# such pairs of runs pooled (a p99 over one run's ~75 window frames is close to their maximum). In the
# throughput run the stream detects STREAM_IN_FLIGHT frames at once (the paced runs, one) with STREAM_THREADS intra-op
# threads each; the Python loop, one frame with PYTHON_THREADS (each at its fastest on 2 cores).
STREAM_VIDEO ?= out/stream-bench.mp4
STREAM_THREADS ?= 1
STREAM_IN_FLIGHT ?= 2
PYTHON_THREADS ?= 2
ROLLBACKS ?= 5
STREAM_TRIALS ?= 3
# After setup (ffmpeg and the photo), even under make -j; written beside and renamed, so a failed run leaves no video.
$(STREAM_VIDEO): | setup
	@mkdir -p $(dir $@)
	ffmpeg -nostdin -hide_banner -loglevel error -y -framerate 30 -loop 1 -i models/images/bus.jpg \
		-vf "scale=810:1080,crop=640:480:x='min(n,170)':y='min(n,600)',drawtext=text='%{frame_num}':x=10:y=10:fontsize=40:fontcolor=white:box=1:boxcolor=black" \
		-frames:v 300 -c:v libx264 -pix_fmt yuv420p -f mp4 $@.part
	mv $@.part $@

bench-stream: build $(STREAM_VIDEO)
	.build/release/yoloswap bench-stream --video $(STREAM_VIDEO) --model $(MODEL) --threads $(STREAM_THREADS) \
		--frames-in-flight $(STREAM_IN_FLIGHT) --python-threads $(PYTHON_THREADS) --swaps 10 --rollbacks $(ROLLBACKS) \
		--trials $(STREAM_TRIALS)
# The Open Inference Protocol's throughput as a client sees it (README → Performance): the same closed loop through
# POST /v1/detect and through tritonclient (HTTP: BYTES image and raw tensor; gRPC), against the release binary.
bench-oip: build
	bash scripts/bench-oip

# Regenerates the committed gRPC code (Sources/OpenInferenceGRPC/Generated) from tritonclient's descriptors; builds
# the protoc plugins first (slow the first time).
grpc-generate: setup
	bash scripts/generate-grpc

clean:
	rm -rf .build .build-tsan .build-asan .build-fuzz out
