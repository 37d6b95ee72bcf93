"""Build a recipe's video index cache ahead of training: ``python -m tsn_dali.index``.

    python -m tsn_dali.index recipes/k400_r50.yaml [--split train|val|test|all] [--set k=v ...]
    torchrun --nnodes 4 --nproc_per_node 8 ... -m tsn_dali.index recipes/k400_r50.yaml

Every video of the split's lists (``all``: every list the recipe names, each once) is
probed once and written to the cache training reads (``data.index_cache``, default
``<data.root>/.tsn_dali_index/``); videos already there and unchanged are not probed again.
The run is resumable: probed videos are saved every ``--save-every`` seconds, so a
killed run keeps them. Under torchrun every rank probes its own share (gloo, CPU only).

It prints a summary and the unusable videos (``path: reason``), and writes all of them to
``<cache>/bad_videos.txt``. Exit status 0 when the index is built (bad videos are
reported, not fatal), 1 for a usage, recipe or list error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Sequence


from tsn_dali import cli
from tsn_dali.engine.errors import UsageError
from tsn_dali.config import RecipeError, load_recipe, resolve_data_path
from tsn_dali.data.index.annotations import read_video_list
from tsn_dali.data.index.build import SAVE_EVERY, IndexBuildError, build_index
from tsn_dali.data.index.cache import index_cache_dir

SPLITS = ("train", "val", "test")
SHOWN = 20  # bad videos printed; all of them go to the report file


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m tsn_dali.index", description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="recipe YAML (a path, or a file name under recipes/)")
    p.add_argument("--split", choices=(*SPLITS, "all"), default="all")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workers", type=int, help="probe threads per process (default: data.index_workers, "
                   "else the node's cores per local rank)")
    p.add_argument("--save-every", type=float, default=SAVE_EVERY,
                   help=f"seconds between saves of partial progress (default {SAVE_EVERY:g})")
    p.add_argument("--no-progress", action="store_true")
    return p


def split_paths(recipe, split: str) -> List[str]:
    """Video paths of the split's list (``all``: every list named, each once), in list order.
    Missing files stay in: the index reports them."""
    paths: List[str] = []
    lists = set()
    for name in SPLITS if split == "all" else (split,):
        rel = getattr(recipe.data, f"{name}_list")
        if not rel:
            if split != "all":
                raise RecipeError(recipe.source or "<recipe>", f"data.{name}_list",
                                  f"expected an annotation list for the {name} split")
            continue
        list_file = resolve_data_path(recipe, rel)
        prefix = resolve_data_path(recipe, getattr(recipe.data, f"{name}_prefix"))
        if (list_file, prefix) in lists:
            continue
        lists.add((list_file, prefix))
        records, _ = read_video_list(list_file, prefix, num_classes=recipe.model.num_classes,
                                     check_files=False)
        paths += [r.path for r in records]
    return list(dict.fromkeys(paths))


def _join_group():
    """(rank, initialised here) under torchrun: a gloo group (the build needs no GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
        return dist.get_rank(), True
    return dist.get_rank(), False


def write_report(index, file: str) -> None:
    bad = index.bad
    os.makedirs(os.path.dirname(file), exist_ok=True)
    tmp = file + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(f"{i.path}: {i.error or 'no frames'}\n" for i in bad)
    os.replace(tmp, file)


def run(args) -> int:
    recipe = load_recipe(args.recipe, overrides=args.overrides)
    if recipe.data.format != "video":
        print(f"tsn_dali.index: data.format is {recipe.data.format}: nothing to probe")
        return 0
    paths = split_paths(recipe, args.split)
    cache = index_cache_dir(recipe)
    rank, owns_group = _join_group()
    start = time.monotonic()
    try:
        index = build_index(paths, cache_dir=cache, workers=args.workers or recipe.data.index_workers,
                            progress=not args.no_progress and rank == 0, save_every=args.save_every)
    finally:
        if owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank != 0:
        return 0
    report = os.path.join(cache, "bad_videos.txt")
    write_report(index, report)
    bad = index.bad
    stats = index.stats
    print(f"tsn_dali.index: {len(index)} videos ({args.split}) in {time.monotonic() - start:.1f} s: "
          f"{stats['probed']} probed here, {stats['cached']} from the cache; {len(index) - len(bad)} usable, "
          f"{len(bad)} bad; cache: {cache}" + (f"; bad videos: {report}" if bad else ""), flush=True)
    for info in bad[:SHOWN]:
        print(f"  {info.path}: {info.error or 'no frames'}", file=sys.stderr)
    if len(bad) > SHOWN:
        print(f"  ... and {len(bad) - SHOWN} more in {report}", file=sys.stderr)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_main(lambda: run(_checked(args)), more_errors=(IndexBuildError,))


def _checked(args):
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be >= 1")
    return args


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
