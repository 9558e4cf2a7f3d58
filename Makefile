# The two commands of the README. Both set everything up first (idempotent).
.PHONY: setup demo test check bench

setup:
	./deploy/bootstrap.sh

demo: setup
	.venv/bin/ainode demo

# lint, format and types first (seconds), then the whole suite
test: setup check
	.venv/bin/pytest

check:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy --strict node pipelines dicom_sr

bench: setup
	.venv/bin/python benchmarks/bench_node.py
