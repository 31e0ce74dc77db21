# The README's two commands: `make demo` and `make test`. Both set up what they need first.
.PHONY: setup demo test test-fast bench protos docs

setup:
	@scripts/setup

demo: setup
	.venv/bin/tfgate demo

test: setup
	.venv/bin/python -m pytest -q

test-fast: setup
	.venv/bin/python -m pytest -q -m "not tf"

bench: setup
	.venv/bin/python -m bench

protos: setup
	.venv/bin/python protos/generate.py

# docs/config.md is generated from proxy/config.py; tests/test_configdoc.py checks it.
docs: setup
	.venv/bin/python -m tfgate_dev.configdoc > docs/config.md
