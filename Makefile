# One place for every routine command; the README and CI call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CUSTOMERS ?= 20000
SEED ?= 7
REPLAY_DAYS ?= 14

.PHONY: demo test check lint types bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## demo: install, then the main job end to end: world (ending today), features, models,
## policy, its last REPLAY_DAYS days run through the service as it would have decided them, service
demo: $(STAMP)
	$(BIN)/refund-risk data generate --customers $(CUSTOMERS) --seed $(SEED) --end-by today
	$(BIN)/refund-risk data report
	$(BIN)/refund-risk features build
	$(BIN)/refund-risk train abuse --promote
	$(BIN)/refund-risk train tier --promote
	$(BIN)/refund-risk policy simulate --policy policy/default.yaml --compare policy/handwritten.yaml
	$(BIN)/refund-risk events replay "$${REFUND_RISK_DATA_DIR:-data/generated}/raw" --days $(REPLAY_DAYS)
	@TOKEN=$$($(BIN)/refund-risk keys create --role scorer --name demo) && \
	  printf '\nThe service starts on http://127.0.0.1:8000 (docs at /docs). Ask it for a decision:\n\n' && \
	  printf '  curl -s -X POST http://127.0.0.1:8000/v1/refund-decisions -H "X-API-Key: %s" -H "Content-Type: application/json" -d @serving/example_request.json\n\n' "$$TOKEN"
	$(BIN)/refund-risk serve --host 127.0.0.1 --port 8000

## test: the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest -n 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

types: $(STAMP)
	$(BIN)/mypy

## check: lint, types and tests, as CI runs them
check: lint types test

## bench: throughput figures (printed, not asserted)
bench: $(STAMP)
	$(BIN)/refund-risk data benchmark --customers 20000 --customers 1000000
	$(BIN)/refund-risk features benchmark --customers 20000 --customers 1000000
	$(BIN)/python -m bench.run --seconds 15 --warmup 5
	$(BIN)/python -m bench.run --seconds 15 --warmup 5 --workers 1 --workers 2 \
	  --database-url "$${REFUND_RISK_BENCH_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}"

clean:
	rm -rf $(VENV) data/generated mlruns .mypy_cache .ruff_cache .pytest_cache
