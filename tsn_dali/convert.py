"""``python -m tsn_dali.convert mmaction IN.pth OUT.pth --recipe RECIPE``: an MMAction2 TSN
checkpoint as a tsn_dali checkpoint (``model``, ``recipe``, ``format``), loadable by
``build_model`` with ``strict=True`` and by ``python -m tsn_dali.test``.

Key mapping: tsn_dali.models.mmaction (MMAction2's ConvModule ResNet names -> torchvision;
torchvision/timm/mmcls backbones unchanged; ``cls_head.fc_cls`` -> ``fc``).
MMAction2 checkpoints pickle mmengine and numpy objects in ``meta``/``message_hub``; they
are read as inert stand-ins, nothing of theirs imported or run (mmengine need not be
installed). A file naming any other class or function is refused; ``--allow-pickle``
(trusted files only) reads it with full unpickling.

torch and the model zoo are imported after the recipe is read (--help and a recipe error
answer at once).
"""
from __future__ import annotations

from typing import List, Optional

from tsn_dali import cli
from tsn_dali.config import RecipeError, load_recipe
from tsn_dali.errors import CheckpointError


def convert_mmaction_checkpoint(src, dst, recipe_path, allow_pickle: bool = False,
                                overrides: Optional[List[str]] = None) -> dict:
    """Read ``src`` (MMAction2 ``{'state_dict': ...}`` or a bare state dict), convert, check
    it against the recipe's model (strict), write ``dst``. Returns the written dict."""
    recipe = load_recipe(recipe_path, overrides)
    from tsn_dali.engine.checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint
    from tsn_dali.models import build_model, convert_mmaction_state_dict
    from tsn_dali.models.weights import check_state_dict

    ckpt = load_checkpoint(src, allow_pickle=allow_pickle)
    state = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    try:
        ours = convert_mmaction_state_dict(state, recipe.model.backbone)
    except ValueError as exc:
        raise CheckpointError(f"{src}: does not convert to a TSN with backbone "
                              f"{recipe.model.backbone} ({exc})") from None
    classes = int(ours["fc.weight"].shape[0])
    if classes != recipe.model.num_classes:
        raise RecipeError(recipe.source, "model.num_classes",
                          f"the checkpoint {src} has {classes} classes, the recipe {recipe.model.num_classes} "
                          f"(use --set model.num_classes={classes} or another recipe)")
    recipe.model.pretrained = None
    model = build_model(recipe.model, source=recipe.source)
    check_state_dict(model, ours, src, hint=f" (recipe {recipe.source}, backbone {recipe.model.backbone})")
    model.load_state_dict(ours, strict=True)
    out = {"model": ours, "recipe": recipe.to_dict(), "format": FORMAT, "version": VERSION,
           "meta": {"converted_from": str(src), "source_format": "mmaction2"}}
    save_checkpoint(out, dst)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = cli.ArgumentParser(prog="python -m tsn_dali.convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    mm = sub.add_parser("mmaction", help="MMAction2 TSN checkpoint -> tsn_dali checkpoint")
    mm.add_argument("src", metavar="IN.pth")
    mm.add_argument("dst", metavar="OUT.pth")
    mm.add_argument("--recipe", required=True, help="the recipe of the row (e.g. recipes/k400_r50.yaml)")
    mm.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override, e.g. model.num_classes=174")
    mm.add_argument("--allow-pickle", action="store_true",
                    help="read the checkpoint with full unpickling: it can run code; trusted files only")
    args = parser.parse_args(argv)

    def convert():
        out = convert_mmaction_checkpoint(args.src, args.dst, args.recipe, args.allow_pickle, args.overrides)
        print(f"{args.dst}: {len(out['model'])} tensors, backbone {out['recipe']['model']['backbone']}, "
              f"{out['model']['fc.weight'].shape[0]} classes")

    return cli.run_main(convert)


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
