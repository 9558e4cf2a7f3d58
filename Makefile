# The two commands of the README. Both set everything up first (idempotent).
.PHONY: setup demo test bench

setup:
	./deploy/bootstrap.sh

demo: setup
	.venv/bin/ainode demo

test: setup
	.venv/bin/pytest

bench: setup
	.venv/bin/python benchmarks/bench_node.py
