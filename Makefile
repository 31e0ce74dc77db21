# The README's two commands: `make demo` and `make test`. Both set up what they need first.
.PHONY: setup demo test test-fast lint bench protos docs

setup:
	@scripts/setup

demo: setup
	.venv/bin/tfgate demo

test: setup
	.venv/bin/python -m pytest -q

# ruff (lint) and mypy (types of the shipped proxy), both configured in pyproject.toml.
lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

test-fast: setup
	.venv/bin/python -m pytest -q -m "not tf and not slow"

bench: setup
	.venv/bin/python -m bench

protos: setup
	.venv/bin/python protos/generate.py

# docs/config.md and the chart's values schema are generated from proxy/config/;
# tests/test_configdoc.py checks them.
docs: setup
	.venv/bin/python -m tfgate_dev.configdoc > docs/config.md
	.venv/bin/python helm/schema.py
