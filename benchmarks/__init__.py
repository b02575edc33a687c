"""tinyllm's benchmarks: one script per comparison, and ``python -m benchmarks`` to run them all
(see benchmarks/run.py and benchmarks/README.md)."""
