"""``python -m benchmarks [--quick] [--only SECTION ...] [--out DIR]``: the benchmark runner."""
import sys

from benchmarks.run import main

if __name__ == "__main__":
    sys.exit(main())
