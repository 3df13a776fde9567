# YOLOSwap — the two commands: `make run` and `make test`. Both install what is missing first (scripts/setup).
SHELL := /bin/bash
SWIFT ?= swift
MODEL ?= models/yolov3-tiny-coco-416.onnx
IMAGES ?= models/images/bus.jpg models/images/zidane.jpg models/images/dog.jpg models/images/person.jpg \
          models/images/horses.jpg models/images/eagle.jpg models/images/giraffe.jpg models/images/kite.jpg

.PHONY: all setup build build-debug run test bench clean

all: build

setup:
	@bash scripts/setup

build: setup
	$(SWIFT) build -c release --product yoloswap

build-debug: setup
	$(SWIFT) build --build-tests

# Runs the main job: detection on the sample photos with the default COCO model; annotated images go to out/.
run: build
	.build/release/yoloswap detect --model $(MODEL) --save out $(IMAGES)
	@echo "annotated images written to out/"

# The whole suite (Swift Testing), after set-up. Integration tests run the real binary and the Python reference.
test: build-debug
	$(SWIFT) test --skip-build

# Performance figures for the README (see README → Performance).
bench: build
	.build/release/yoloswap bench --model $(MODEL) --threads 2 models/images/bus.jpg
	.venv/bin/python tools/reference.py --model $(MODEL) --threads 2 --bench 100 models/images/bus.jpg

clean:
	rm -rf .build out
