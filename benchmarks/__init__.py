"""Benchmarks: throughput and capacity figures, each written as JSON with its provenance."""
