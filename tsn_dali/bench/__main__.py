"""``python -m tsn_dali.bench``: see the package docstring."""
from tsn_dali import cli
from tsn_dali.bench.cli import main

raise SystemExit(cli.entry(main))
