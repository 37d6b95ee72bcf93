"""``python -m tsn_dali.reparameterize IN.pth OUT.pth``: a trained MobileOne TSN (train form)
to its fused inference form, as MMAction2's tools/convert/reparameterize_model.py.

IN is a tsn_dali checkpoint (``model`` state dict + ``recipe``), or a bare TSN state dict
with ``--backbone`` (and ``--num-classes`` if not the fc's). OUT holds ``model`` (fused),
``recipe`` with ``model.deploy: true`` (so ``build_model`` builds the fused form) and
``format``; it is enough for ``python -m tsn_dali.test``.

torch and the model zoo are imported once the command line is read (--help answers at once).
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from tsn_dali import cli
from tsn_dali.config import ModelConfig, Recipe, recipe_from_dict
from tsn_dali.errors import CheckpointError


def reparameterize_checkpoint(ckpt: dict, path, backbone: Optional[str] = None) -> dict:
    """The deploy-form checkpoint dict of a train-form one (see the module docstring)."""
    import torch

    from tsn_dali.engine.checkpoint import FORMAT, VERSION
    from tsn_dali.models import build_model, has_deploy_form, reparameterize_backbone
    from tsn_dali.models.weights import check_state_dict

    if isinstance(ckpt.get("model"), dict) and isinstance(ckpt.get("recipe"), dict):
        recipe = recipe_from_dict(ckpt["recipe"], source=f"{path}:recipe")
        state = ckpt["model"]
    elif all(isinstance(v, torch.Tensor) for v in ckpt.values()) and "fc.weight" in ckpt:
        if not backbone:
            raise CheckpointError(f"{path}: a bare state dict; pass --backbone (e.g. mobileone_s4)")
        state = ckpt
        recipe = Recipe(name="reparameterized",
                        model=ModelConfig(backbone=backbone, num_classes=int(state["fc.weight"].shape[0])))
    else:
        raise CheckpointError(f"{path}: expected a tsn_dali checkpoint (keys 'model' and 'recipe') or a "
                              f"bare TSN state dict (with fc.weight), found keys {sorted(ckpt)[:6]}")
    cfg = recipe.model
    if backbone and backbone != cfg.backbone:
        raise CheckpointError(f"{path}: --backbone {backbone} but the checkpoint's recipe says {cfg.backbone}")
    if cfg.deploy:
        raise CheckpointError(f"{path}: already reparameterised (recipe model.deploy is true)")
    if not has_deploy_form(cfg.backbone):
        raise CheckpointError(f"{path}: backbone {cfg.backbone} has no deploy form; expected a MobileOne")
    model = build_model(dataclasses.replace(cfg, pretrained=None))
    check_state_dict(model, state, path)
    model.load_state_dict(state, strict=True)
    model.eval()
    reparameterize_backbone(model)
    recipe.model = dataclasses.replace(cfg, deploy=True, pretrained=None)
    return {"model": model.state_dict(), "recipe": recipe.to_dict(), "format": FORMAT, "version": VERSION,
            "meta": {"reparameterized_from": str(path)}}


def main(argv: Optional[List[str]] = None) -> int:
    parser = cli.ArgumentParser(prog="python -m tsn_dali.reparameterize",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("src", metavar="IN.pth")
    parser.add_argument("dst", metavar="OUT.pth")
    parser.add_argument("--backbone", help="for a bare state dict: the backbone (e.g. mobileone_s4)")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read the checkpoint with full unpickling: it can run code; trusted files only")
    args = parser.parse_args(argv)

    def reparameterize():
        from tsn_dali.engine.checkpoint import load_checkpoint, save_checkpoint

        out = reparameterize_checkpoint(load_checkpoint(args.src, allow_pickle=args.allow_pickle), args.src,
                                        args.backbone)
        save_checkpoint(out, args.dst)
        print(f"{args.dst}: {out['recipe']['model']['backbone']} reparameterised (model.deploy: true)")

    return cli.run_main(reparameterize)


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
