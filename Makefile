# The few targets a newcomer needs. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := checkpoints/demo
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

JEMALLOC := /usr/lib/$(shell uname -m)-linux-gnu/libjemalloc.so.2

.PHONY: install install-gpu demo test test-fast lint docs dist data malloc bench gpu-carry clean

install: $(VENV)/.installed malloc

# Re-installs when pyproject.toml changes; the install is editable, so code edits need none.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,docs,wandb,digits]'
	touch $@

# JAX's CUDA 13 build on top (the [cuda] extra), for a machine with an NVIDIA GPU.
install-gpu: install
	$(BIN)/python -m pip install --quiet -e '.[test,docs,wandb,digits,cuda]'

# The sdist and the wheel in dist/, built with this environment's setuptools (offline);
# `pip install dist/jaxtrain-*.whl` installs jaxtrain anywhere (docs/getting-started.md).
dist: install
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

# Fashion-MNIST from Debian's package: real data that needs no download at run time.
data:
	@test -f $(FASHION) || { \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get install -y dataset-fashion-mnist || \
	  { $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; }; }

# jemalloc, which the `jaxtrain` command starts under where it is installed (no RSS spikes
# from a fragmented heap: docs/performance.md). Debian's libjemalloc2 where apt-get can
# install it; elsewhere jaxtrain keeps glibc's malloc, and this says so.
malloc:
	@test -f $(JEMALLOC) || { \
	  echo "installing Debian's libjemalloc2 (the malloc jaxtrain starts under)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  { command -v apt-get >/dev/null && { $$SUDO apt-get install -y libjemalloc2 || \
	    { $$SUDO apt-get update && $$SUDO apt-get install -y libjemalloc2; }; }; } || \
	  echo "libjemalloc2 is not installed: jaxtrain uses glibc's malloc (docs/performance.md)"; }

demo: install data
	$(BIN)/jaxtrain fit --dataset fashion-mnist --epochs 1 --workdir $(DEMO_DIR) --overwrite
	$(BIN)/jaxtrain sample --class 7 --workdir $(DEMO_DIR) --out $(DEMO_DIR)/sample_class_7.png
	$(BIN)/jaxtrain eval --workdir $(DEMO_DIR)
	@echo "demo done: run in $(DEMO_DIR)/ (checkpoints/, metrics.jsonl, config.toml, tb/, samples_epoch001.png, recon_epoch001.png, sample_class_7.png)"
	@echo "look at it: $(BIN)/jaxtrain runs; $(BIN)/jaxtrain plot $(DEMO_DIR); tensorboard --logdir checkpoints"

test: install
	$(BIN)/python -m pytest

# The edit loop: everything but the tests marked slow (about a minute).
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .

# The reference pages regenerated from the code, then the site, strict, into site/.
docs: install
	$(BIN)/python docs/generate.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# jaxtrain against PyTorch eager, side by side (about 26 minutes): benchmarks/results/.
bench: install data
	$(BIN)/python benchmarks/bench.py --dataset fashion-mnist

# What benchmarks/gpu_check.sh takes to a GPU machine that cannot download (docs/gpu.md):
# two small wheels its Python may lack, Fashion-MNIST and the Vim manual (the baby GPT's text).
gpu-carry: install data
	mkdir -p .gpu-carry/wheels .gpu-carry/fashion-mnist
	$(BIN)/python -m pip download --quiet --no-deps -d .gpu-carry/wheels tensorboardX tomli-w
	cp /usr/share/datasets/fashion-mnist/*.gz .gpu-carry/fashion-mnist/
	cat /usr/share/vim/vim*/doc/usr_*.txt > .gpu-carry/vim-manual.txt

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache site
