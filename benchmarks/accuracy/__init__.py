"""Accuracy of the analytics rules on labelled footage (run all: python -m benchmarks.accuracy)."""
