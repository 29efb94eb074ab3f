PY := .venv/bin/python
export DETECTRON2_DATASETS ?= datasets
DEMO_CFG := configs/demo/FCOS_R18_shapes_demo.yaml
DEMO_OUT := output/demo
# Extra config overrides, e.g. make demo DEMO_OUT=output/demo_bf16 DEMO_OPTS="MODEL.FCOS.TRAIN_DTYPE bfloat16"
DEMO_OPTS :=

.PHONY: setup demo test bench format

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m fcos_d2.data.shapes --root $(DETECTRON2_DATASETS)/shapes
	$(PY) train_net.py --config-file $(DEMO_CFG) OUTPUT_DIR $(DEMO_OUT) $(DEMO_OPTS)
	$(PY) -m fcos_d2.visualize --config-file $(DEMO_CFG) --output $(DEMO_OUT) \
		MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m fcos_d2.benchmark --output output/benchmark

format: setup
	$(PY) -m isort --profile black -l 100 fcos_d2 tests train_net.py
	$(PY) -m black -l 100 fcos_d2 tests train_net.py
