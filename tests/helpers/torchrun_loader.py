"""Run under torchrun (gloo, CPU): build train and val loaders on a recipe and write, per
rank, the sample ids of every batch and the batch counts to ``<out>/rank<r>.json``.

    python -m torch.distributed.run --nproc_per_node=2 torchrun_loader.py RECIPE OUT
"""
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist


from tsn_dali.config import load_recipe
from tsn_dali.data import build_loader


def main(recipe_path, out_dir):
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    recipe = load_recipe(recipe_path)
    result = {"rank": rank, "world_size": world_size,  # node and process on it (torchrun's env)
              "group_rank": int(os.environ.get("GROUP_RANK", 0)),
              "local_rank": int(os.environ.get("LOCAL_RANK", 0))}
    for split in ("train", "val"):
        loader = build_loader(recipe, split, rank=rank, world_size=world_size, progress=False)
        batches = [b.samples.tolist() for b in loader]
        result[split] = {"len": len(loader), "batches": batches,
                         "shape": list(loader.batch_samples()[0].shape)}
        loader.close()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
