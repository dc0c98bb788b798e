"""GPU node checks, runnable without Ray (python -m benchmarks.gpu.run_all)."""
