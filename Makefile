# satflow developer entry points. Every target creates what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
TOOLS  := .venv-tools
PY     := $(VENV)/bin/python
PORT   ?= 3000

.PHONY: run test lint unit bench demo layer clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# aws-sam-cli pins an older pydantic than the layer uses, so it lives in its own venv.
$(TOOLS)/.installed: requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --upgrade pip
	$(TOOLS)/bin/pip install -q -r requirements-tools.txt
	touch $@

## run: the local runtime on 127.0.0.1:$(PORT) (moto in-process, no AWS, no Docker)
## RISK_THRESHOLDS='{"review":30,"block":101}' overrides the risk policy (demo of held sends)
run: $(VENV)/.installed
	SATFLOW_WORKFLOW_WAIT_S=$${SATFLOW_WORKFLOW_WAIT_S:-2} SATFLOW_WEBHOOK_RETRY_BASE_S=$${SATFLOW_WEBHOOK_RETRY_BASE_S:-2} \
	  $(PY) -m satflow_dev.runtime --port $(PORT) $(if $(RISK_THRESHOLDS),--parameter 'RiskThresholds=$(RISK_THRESHOLDS)')

## test: lint the template and run the whole test suite
test: $(VENV)/.installed lint
	$(PY) -m pytest

lint: $(VENV)/.installed $(TOOLS)/.installed
	$(TOOLS)/bin/sam validate --lint --template template.yaml --region us-east-1
	$(VENV)/bin/cfn-lint template.yaml

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

## bench: printed figures, not pass/fail
bench: $(VENV)/.installed
	$(PY) benchmarks/cold_imports.py
	$(PY) benchmarks/scan_block.py
	$(PY) benchmarks/payout_vbytes.py

## demo: two accounts, a funding adjustment and a transfer against a running `make run`
demo: $(VENV)/.installed
	$(PY) -m satflow_dev.demo --base-url http://127.0.0.1:$(PORT)

## layer: the Lambda layer for the target architecture, without Docker (pip platform targeting)
layer: $(VENV)/.installed
	$(PY) infra/build_layer.py --arch $${ARCH:-arm64} --out .build/layer

clean:
	rm -rf $(VENV) $(TOOLS) .build .aws-sam
