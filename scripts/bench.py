"""The benchmark suite (same as ``nth bench``): writes results/BENCHMARKS.md. See nth/bench.py.

    python scripts/bench.py [--out results/BENCHMARKS.md]
"""

import sys

from nth.bench import main

if __name__ == "__main__":
    sys.exit(main())
