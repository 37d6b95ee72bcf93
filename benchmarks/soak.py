"""Thin wrapper: ``python benchmarks/soak.py [...]`` is ``python -m tsn_dali.soak [...]``
(several train + val epochs per executor; RSS and thread count after each epoch)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsn_dali.soak import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
