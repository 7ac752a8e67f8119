# Thin wrappers around dev.py, which needs nothing but Python.
.PHONY: demo test lint ci bench

demo:
	python3 dev.py demo

test:
	python3 dev.py test

ci:
	bash .ci/run

bench:
	.venv/bin/python -m benchmarks.throughput
