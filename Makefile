PY := .venv/bin/python
FCOS := $(PY) -m fcos_d2
export DETECTRON2_DATASETS ?= datasets
DEMO_CFG := configs/demo/FCOS_R18_shapes_demo.yaml
DEMO_OUT := output/demo
# Extra config overrides, e.g. make demo DEMO_OUT=output/demo_bf16 DEMO_OPTS="MODEL.FCOS.TRAIN_DTYPE bfloat16"
DEMO_OPTS :=

.PHONY: setup demo test test-fast bench format

setup:
	@bash scripts/setup.sh

demo: setup
	$(FCOS) data shapes --output $(DETECTRON2_DATASETS)/shapes
	$(FCOS) train --config-file $(DEMO_CFG) --output $(DEMO_OUT) $(DEMO_OPTS)
	$(FCOS) visualize --config-file $(DEMO_CFG) --weights $(DEMO_OUT)/model_final.pth \
		--output $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q tests

# The tests without those marked slow (training, export, several processes, benchmarks).
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(FCOS) benchmark --output output/benchmark

format: setup
	$(PY) -m isort --profile black -l 100 fcos_d2 tests train_net.py
	$(PY) -m black -l 100 fcos_d2 tests train_net.py
