# satflow developer entry points. Every target creates what it needs on a fresh machine.
VENV    := .venv
TOOLS   := .venv-tools
CHECKOV := .venv-checkov
PY      := $(VENV)/bin/python
PORT    ?= 3000

# Lambda runs python$(LAMBDA_PYTHON) (template.yaml, Globals.Function.Runtime; a contract test keeps them equal). The
# venvs use the same minor when this machine has it - on PATH or under ~/.pyenv/versions (pyenv's shims answer only
# for the selected version, so each candidate is run once) - else python3, with a note. PYTHON=... overrides.
LAMBDA_PYTHON := 3.12
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python$(LAMBDA_PYTHON) $(HOME)/.pyenv/versions/$(LAMBDA_PYTHON).*/bin/python$(LAMBDA_PYTHON); do \
            "$$p" -c "" >/dev/null 2>&1 && { command -v "$$p"; break; }; done)
ifeq ($(PYTHON),)
PYTHON := python3
$(info note: python$(LAMBDA_PYTHON) (the Lambda runtime) not found on PATH or in ~/.pyenv/versions; using $(shell python3 -V 2>&1))
endif
endif
PY_MINOR := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)

.PHONY: run test test-real regtest-build dynamodb-local bench-runtime lint unit bench bench-ledger demo layer build clean print-python soak bench-routes

## print-python: the interpreter the venvs are made with
print-python:
	@echo $(PYTHON)

# The real-node tier (btcd + two lnd on regtest, DynamoDB Local) needs go, java 17+ and mvn; without them
# `make test` runs the simulated tier only and says so. SATFLOW_REALNODES=require turns a missing build into a
# failure instead of a skip.
HAVE_REAL_TOOLCHAIN := $(shell command -v go >/dev/null 2>&1 && command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 && echo yes)

# Each venv records the Python minor it was made with (.python-X.Y); made by another one, it is rebuilt from scratch.
$(VENV)/.python-$(PY_MINOR) $(TOOLS)/.python-$(PY_MINOR) $(CHECKOV)/.python-$(PY_MINOR):
	rm -rf $(@D)
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/python -m pip install -q --upgrade pip
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.python-$(PY_MINOR)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# aws-sam-cli pins an older pydantic than the layer uses, so it lives in its own venv.
$(TOOLS)/.installed: requirements-tools.txt $(TOOLS)/.python-$(PY_MINOR)
	$(TOOLS)/bin/pip install -q -r requirements-tools.txt
	touch $@

# checkov pins its own boto3, cfn-lint-free dependency set and more: a third venv, so neither side moves the other.
$(CHECKOV)/.installed: requirements-checkov.txt $(CHECKOV)/.python-$(PY_MINOR)
	$(CHECKOV)/bin/pip install -q -r requirements-checkov.txt
	touch $@

## run: the local runtime on 127.0.0.1:$(PORT) (no AWS, no Docker); each function's handlers in worker processes
## DYNAMODB=auto (default): the table on DynamoDB Local when java + mvn are installed (fetched from Maven Central
##   on first use, ~30 s; then reused), else moto; the runtime prints which engine it uses and why.
##   DYNAMODB=local insists on DynamoDB Local, DYNAMODB=moto forces moto (in-process, slower, grows with writes).
## RISK_THRESHOLDS='{"review":30,"block":101}' overrides the risk policy (demo of held sends)
## BACKEND=regtest: real btcd + our lnd + an external lnd instead of the simulators (builds them first)
BACKEND ?= simulators
DYNAMODB ?= auto
HAVE_JAVA_MVN := $(shell command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1 && echo yes)
run: $(VENV)/.installed $(if $(filter regtest,$(BACKEND)),regtest-build) $(if $(filter-out moto,$(DYNAMODB)),dynamodb-local)
	SATFLOW_WORKFLOW_WAIT_S=$${SATFLOW_WORKFLOW_WAIT_S:-2} SATFLOW_WEBHOOK_RETRY_BASE_S=$${SATFLOW_WEBHOOK_RETRY_BASE_S:-2} \
	  $(PY) -m satflow_dev.runtime --port $(PORT) --backend $(BACKEND) --dynamodb $(DYNAMODB) $(if $(RISK_THRESHOLDS),--parameter 'RiskThresholds=$(RISK_THRESHOLDS)')

## dynamodb-local: only DynamoDB Local (Maven Central) into .build/ (~30 s cold, < 1 s warm), not lnd/btcd.
## With DYNAMODB=auto a machine without java/mvn (or offline) goes on with moto; DYNAMODB=local makes it an error.
dynamodb-local: $(VENV)/.installed
ifeq ($(HAVE_JAVA_MVN),yes)
ifeq ($(DYNAMODB),local)
	$(PY) -m satflow_dev.regtest build --only dynamodb
else
	-$(PY) -m satflow_dev.regtest build --only dynamodb
endif
else
	@echo "DynamoDB Local: java and/or mvn not installed$(if $(filter local,$(DYNAMODB)),; DYNAMODB=local needs them, ; the runtime falls back to moto)"
	@$(if $(filter local,$(DYNAMODB)),exit 1,true)
endif

## bench-runtime: soak of the local runtime through HTTP (1 and 8 clients; DynamoDB Local and moto), RSS before/after
bench-runtime: $(VENV)/.installed dynamodb-local
	$(PY) benchmarks/runtime_soak.py

## test: lint the template and run the whole test suite (both tiers when the real-node toolchain is installed)
test: $(VENV)/.installed lint
ifeq ($(HAVE_REAL_TOOLCHAIN),yes)
	$(MAKE) regtest-build
	SATFLOW_REALNODES=require $(PY) -m pytest
else
	@echo "real-node tier SKIPPED: needs go, java 17+ and mvn (see README, 'Real-node tier')"
	$(PY) -m pytest
endif

## regtest-build: lnd/lncli/btcd/btcctl (Go module proxy) and DynamoDB Local (Maven Central) into .build/;
## reused while current (first build ~15 min on 2 busy cores, then < 1 s)
regtest-build: $(VENV)/.installed
	$(PY) -m satflow_dev.regtest build

## test-real: only the real-node tier (the tests marked realnodes), building what it needs first
test-real: regtest-build
	SATFLOW_REALNODES=require $(PY) -m pytest -m realnodes

## lint: sam validate --lint, cfn-lint, and checkov gated by infra/checkov-accepted.yaml (every accepted finding
## has its reason there; a new finding, or an acceptance that no longer matches, fails)
lint: $(VENV)/.installed $(TOOLS)/.installed $(CHECKOV)/.installed
	$(TOOLS)/bin/sam validate --lint --template template.yaml --region us-east-1
	$(VENV)/bin/cfn-lint template.yaml
	@mkdir -p .build
	$(CHECKOV)/bin/checkov --quiet --skip-download -f template.yaml --framework cloudformation -o json > .build/checkov.json || test -s .build/checkov.json
	$(PY) infra/checkov_gate.py .build/checkov.json infra/checkov-accepted.yaml

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

## soak: the deterministic simulation (issue 14) over many seeds on DynamoDB Local; prints operations/s and
## anomalies, and a replay command per failing seed. Default 500 seeds x 200 ops = 100,000 operations, 16 workers.
## SOAK_DYNAMODB=moto runs without java (moto slows down as a seed's table grows).
SOAK_SEED ?= 1000
SOAK_SEEDS ?= 500
SOAK_OPS ?= 200
SOAK_WORKERS ?= 16
SOAK_FAULTS ?= all
SOAK_DYNAMODB ?= local
soak: $(VENV)/.installed $(if $(filter local,$(SOAK_DYNAMODB)),regtest-build)
	$(PY) -m satflow_dev.sim --quiet --seed $(SOAK_SEED) --seeds $(SOAK_SEEDS) --ops $(SOAK_OPS) \
	  --workers $(SOAK_WORKERS) --faults $(SOAK_FAULTS) --dynamodb $(SOAK_DYNAMODB)

## bench: printed figures, not pass/fail
bench: $(VENV)/.installed
	$(PY) benchmarks/cold_imports.py
	$(PY) benchmarks/scan_block.py
	$(PY) benchmarks/payout_vbytes.py

## bench-ledger: the ledger write path on DynamoDB Local (floor / raw adapter / as wired, 1-16 threads, hot
## account, retries, sealer throughput), then the DynamoDB calls per money route and the HTTP transfer latency
## against the ledger op (bench-routes); fetches DynamoDB Local first. ~3 min.
bench-ledger: regtest-build
	$(PY) benchmarks/ledger_bench.py
	$(PY) benchmarks/route_calls.py

## bench-routes: DynamoDB calls per money route (counted) and HTTP transfer latency vs the ledger op, DynamoDB Local
bench-routes: $(VENV)/.installed regtest-build
	$(PY) benchmarks/route_calls.py

## demo: two accounts, a funding adjustment and a transfer against a running `make run`
demo: $(VENV)/.installed
	$(PY) -m satflow_dev.demo --base-url http://127.0.0.1:$(PORT)

## layer: the Lambda layer for the target architecture, without Docker (pip platform targeting)
layer: $(VENV)/.installed
	$(PY) infra/build_layer.py --arch $${ARCH:-arm64} --out .build/layer

## build: sam build (functions and layer) with python$(LAMBDA_PYTHON) first on PATH, as SAM's Python builder wants
build: $(TOOLS)/.installed
	PATH="$(abspath $(dir $(shell command -v $(PYTHON)))):$$PATH" $(TOOLS)/bin/sam build --template template.yaml

clean:
	rm -rf $(VENV) $(TOOLS) $(CHECKOV) .build .aws-sam
