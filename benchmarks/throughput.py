"""Thin wrapper: ``python benchmarks/throughput.py RECIPE --videos ...`` is
``python -m tsn_dali.bench RECIPE --videos ...`` (see benchmarks/README.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsn_dali.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
