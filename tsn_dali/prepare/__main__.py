from tsn_dali import cli
from tsn_dali.prepare import main

raise SystemExit(cli.entry(main))
