"""FLOPs/params table beside MMAction2's reported figures: the same as ``python -m tsn_dali.flops`` (see its docstring)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsn_dali.flops import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
