"""``python -m tsn_dali.bench``: the parts (each a comparison measured interleaved) and the command line."""
from __future__ import annotations

import datetime
import sys
from typing import Optional, Sequence

from tsn_dali import cli
from tsn_dali.bench.options import GOP_CODECS, GOP_VIEWS, PARTS, PEERS, check_args
from tsn_dali.config import PROJECT_ROOT, load_recipe

# The run itself (torch, DALI, the model) is tsn_dali.bench.runner, imported once the command
# line and the recipe are read: --help, a bad option and a recipe error answer at once.


def run(args, argv: Sequence[str], recipe=None) -> dict:
    """The benchmark's result (tsn_dali.bench.runner.Run); ``recipe``: the one ``args`` name, read already."""
    check_args(args)
    if args.quick:
        args.rounds, args.warmup, args.iters = 2, 1, min(args.iters or 1, 1)
        args.gop_videos = min(args.gop_videos, 2)
    recipe = recipe if recipe is not None else load_recipe(args.recipe, args.overrides)
    from tsn_dali.bench.runner import Run

    return Run(args, argv, recipe)()


def parse_args(argv: Optional[Sequence[str]] = None):
    p = cli.ArgumentParser(prog="python -m tsn_dali.bench",
                                description="Loader, model and end-to-end clips/s of a recipe, side by side.")
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/k400_r50.yaml)")
    p.add_argument("--videos", nargs="+", default=[], metavar="DIR_OR_LIST",
                   help="folders of videos, video files or MMAction2 video lists")
    p.add_argument("--prefix", default=None,
                   help="folder the paths of a --videos list are relative to (default: the list's folder)")
    p.add_argument("--generate", type=int, default=0, metavar="N",
                   help="also generate N K400-like clips (340x256, 30 fps) in the work dir")
    p.add_argument("--generate-frames", type=int, default=300, help="frames per generated clip (default 300)")
    p.add_argument("--generate-codec", choices=GOP_CODECS, default="h264", help="codec of generated clips")
    p.add_argument("--generate-gop", type=int, default=None, help="keyframe interval of generated clips "
                   "(default: the encoder's long GOP)")
    p.add_argument("--executors", default="dali-gpu,dali-cpu,reference",
                   help="executors, each with +options: whole, copy, sessionsN, mmaction "
                        "(e.g. dali-gpu,dali-gpu+whole,reference)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"parts to run, some of {', '.join(PARTS)}")
    p.add_argument("--reference-workers", type=int, default=16, help="DataLoader workers of the reference executor")
    p.add_argument("--batch-size", type=int, default=None, help="train batch (default loader.batch_size)")
    p.add_argument("--test-batch-size", type=int, default=None, help="test view batch (default loader.test_batch_size)")
    p.add_argument("--peers", default="", help=f"other loaders measured on the same clips, some of "
                   f"{', '.join(PEERS)} (mmaction2: MMAction2's own config pipeline; each skipped, saying why, "
                   "where its package is missing)")
    p.add_argument("--baseline", default="reference",
                   help="the system each loader comparison's ratios are to (default reference; e.g. mmaction2)")
    p.add_argument("--iters", type=int, default=None, help="steps per timed window (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before the timed ones (default 1)")
    p.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=5,
                   help="timed rounds: each system measured once a round, the order rotated (default 5)")
    p.add_argument("--gop-videos", type=int, default=4, help="videos for the GOP comparison (0: skip it)")
    p.add_argument("--gops", default="original,16", help="GOPs compared: 'original' and keyframe intervals "
                   "(e.g. original,16,4,1; 1 is all-intra)")
    p.add_argument("--gop-codec", default="h264", help=f"codecs the GOP videos are re-encoded in, some of "
                   f"{', '.join(GOP_CODECS)} (e.g. h264,vp9: one comparison per codec, GOP and view)")
    p.add_argument("--gop-views", default="train", help=f"views of the GOP comparisons, some of "
                   f"{', '.join(GOP_VIEWS)} (default train)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda where available)")
    p.add_argument("--compile", action="store_true", help="also measure the model under torch.compile")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<device>-<date>)")
    p.add_argument("--work-dir", default=None, help="index cache and re-encoded videos (default: a temp folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as in python -m tsn_dali.config")
    p.add_argument("--note", default=None, help="a line of context for the report (e.g. 'machine shared, under load')")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, 1 warm-up, 1 step, 2 GOP videos")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return cli.run_main(lambda: bench(parse_args(argv), argv), more_errors=(ValueError,))


def bench(args, argv: Sequence[str]) -> None:
    """Run the benchmark as the command line says, print and write its results (written
    after each comparison too, marked incomplete until the end)."""
    check_args(args)
    recipe = load_recipe(args.recipe, args.overrides)
    import torch

    from tsn_dali.bench.environment import device_slug
    from tsn_dali.bench.report import log, markdown, write_outputs

    if not args.out:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        args.out = str(PROJECT_ROOT / "benchmarks" / "results" /
                       f"{device_slug(device)}-{datetime.date.today().isoformat()}")
    result = run(args, argv, recipe)
    files = write_outputs(result, args.out)
    print(markdown(result))
    log(f"wrote {', '.join(files.values())}")


__all__ = ["PARTS", "check_args", "main", "parse_args", "run"]
