# emotionq: `make run` runs the service, `make test` runs the whole test suite (the docs' strict build included),
# `make docs` serves the documentation site.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEV_MODEL ?= var/models/emotion2vec-tiny
PYTEST_ARGS ?= --durations=25

.PHONY: install system-deps services run api worker flower test docs bench loadtest clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[server,test,docs]'
	touch $(STAMP)

install: $(STAMP)

# Command-line tools the tests use to make real speech (espeak-ng, sox, ffmpeg).
system-deps:
	@scripts/system-deps

# RabbitMQ and Redis on this machine, started if they do not answer.
services:
	@scripts/services

$(DEV_MODEL)/model.pt: | $(STAMP)
	$(BIN)/emotionq model init $(DEV_MODEL) --arch tiny

# Without EMOTIONQ_MODEL, `make run` uses an UNTRAINED tiny checkpoint (outputs say untrained: true).
# For local use it also turns API keys off unless EMOTIONQ_AUTH is set (`emotionq run` alone requires keys).
run: $(STAMP) $(DEV_MODEL)/model.pt
	@test -n "$$EMOTIONQ_MODEL" || echo "emotionq: EMOTIONQ_MODEL unset: using the untrained checkpoint $(DEV_MODEL)" >&2
	EMOTIONQ_AUTH=$${EMOTIONQ_AUTH:-disabled} EMOTIONQ_MODEL=$${EMOTIONQ_MODEL:-$(abspath $(DEV_MODEL))} \
		$(BIN)/emotionq run

# Flower on :5555 against EMOTIONQ_BROKER_URL; needs EMOTIONQ_FLOWER_AUTH=user:password (or =disabled, local use).
flower: $(STAMP)
	$(BIN)/emotionq flower

# Two steps: everything but the `slow` tests, in TEST_PROCS processes (pytest-xdist, a module to a process;
# 0: one process), then the `slow` tests (the base and large checkpoints, timings, crashes) one at a time.
TEST_PROCS ?= 2
test: $(STAMP) system-deps services
	$(BIN)/python -m pytest -m "not slow" -n $(TEST_PROCS) --dist loadfile $(PYTEST_ARGS) || test $$? -eq 5
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || test $$? -eq 5  # 5: a selection with no slow test

# The docs site (mkdocs.yml, docs/) on DOCS_ADDR, rebuilt as you edit; its reference pages are generated from the
# code (scripts/docs_hooks.py). tests/test_docs.py builds it with --strict.
DOCS_ADDR ?= 127.0.0.1:8001
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs serve --dev-addr $(DOCS_ADDR)

bench: $(STAMP) system-deps services
	$(BIN)/python -m benchmarks

# Load test of a running service (`make run` in another terminal): locust, headless, then a report per
# request type. LOADTEST_URL (default the API of EMOTIONQ_HOST:EMOTIONQ_PORT), _USERS, _TIME.
LOADTEST_URL ?= http://$${EMOTIONQ_HOST:-127.0.0.1}:$${EMOTIONQ_PORT:-8000}
LOADTEST_USERS ?= 8
LOADTEST_TIME ?= 60s
loadtest: $(STAMP)
	$(BIN)/locust -f deploy/loadtest/locustfile.py --headless --only-summary --loglevel WARNING \
		--host "$(LOADTEST_URL)" --users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_USERS) --run-time $(LOADTEST_TIME)

clean:
	rm -rf var .pytest_cache
