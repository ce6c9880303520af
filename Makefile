# Two commands on a fresh machine: `make demo` and `make test`. Both bootstrap .venv when it is
# missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision pinned to a pair that is known to import together (a newer range may fetch
# several GB); override with `make TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# The package index torch and torchvision come from (default: PyPI, whose Linux wheels bring CUDA);
# `make TORCH_INDEX=https://download.pytorch.org/whl/cpu` installs PyTorch's CPU-only wheels.
TORCH_INDEX ?=
DEMO_DIR ?= runs/demo

.PHONY: demo test venv clean-demo browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Train, then the offline evaluation (linear probe, SC, gate statistics), the gate posterior and
# the HTML report; the last command prints the main numbers and the path of the report.
demo: $(STAMP)
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/bayesncl-train --config configs/scenes_quick.yaml train.out_dir=$(DEMO_DIR)
	$(VENV)/bin/bayesncl-eval $(DEMO_DIR)
	$(VENV)/bin/bayesncl-inspect $(DEMO_DIR) --draws 100
	@echo
	$(VENV)/bin/bayesncl-report $(DEMO_DIR)

# Headless Chromium for the tests of the HTML pages (Debian's packages; installed when missing).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	    else echo "install Debian's chromium and chromium-driver (as root: apt-get install chromium chromium-driver)"; exit 1; fi; }

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO_DIR)
