"""FLOPs and parameters of every recipe, in MMAction2's convention, beside MMAction2's reported figures.

Convention (what MMAction2's TSN README reports; tools/analysis_tools/get_flops.py, which
calls mmengine's ``get_model_complexity_info``):

- "FLOPs" are multiply-accumulates (one MAC = one FLOP), counted over **one test view of
  all its input frames at 224x224: 25 frames** for every row (ResNet-50: 25 x 4.11G =
  102.7G), the model in eval mode.
- Counted as mmengine's (fvcore-derived) FlopAnalyzer counts: convolutions
  (batch x weight size x output positions), linear / matmul / bmm (MACs), BatchNorm in
  eval (2 per element with affine, else 1), LayerNorm / GroupNorm (5 per element with
  affine, else 4), adaptive average pooling and means (1 per input element). Element-wise
  ops (ReLU, GELU, add, softmax) and max/avg pooling are not counted, as in mmengine.
  Attention via ``scaled_dot_product_attention`` counts its two matmuls.
- Parameters: every ``nn.Parameter`` (buffers such as BN running stats excluded), the
  train form for MobileOne (MMAction2's reported 13.72M is the unfused model).

Counting is a ``TorchDispatchMode`` over the aten ops of one forward on the *meta* device
(tsn_dali.models.complexity): shapes only, so even Swin-B x 25 frames costs no compute.

``python -m tsn_dali.flops`` prints the table for every recipe with ``reported.gflops`` and
writes benchmarks/results/flops.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from tsn_dali import cli
from tsn_dali.config import PROJECT_ROOT, Recipe, list_recipes, load_recipe

# The counting itself (torch) is tsn_dali.models.complexity, imported on first use so that the
# command's --help and a recipe error answer before torch is imported.
_COUNTING = ("FlopCounter", "OP_RULES", "count_flops", "count_params")

REPORTED_FRAMES = 25  # one test view's frames in MMAction2's reported FLOPs column (25 clips x 1 frame)
REPORTED_SIZE = 224
FLOPS_TOLERANCE = 0.01  # within 1% of MMAction2's reported figure
PARAMS_TOLERANCE = 0.005  # within 0.5%
RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "flops.md"


def __getattr__(name):
    if name in _COUNTING:
        from tsn_dali.models import complexity

        return getattr(complexity, name)
    raise AttributeError(f"module 'tsn_dali.flops' has no attribute {name!r}")


def build_on_meta(model_cfg):
    """The recipe's TSN with meta tensors (no memory, no init cost); ``pretrained`` ignored."""
    import dataclasses

    import torch

    from tsn_dali.models import build_model

    cfg = dataclasses.replace(model_cfg, pretrained=None)
    with torch.device("meta"):
        return build_model(cfg)


def measure(model_cfg, frames: int = REPORTED_FRAMES, size: int = REPORTED_SIZE, device: str = "meta") -> dict:
    """GFLOPs (MACs) of one ``frames``-frame view at ``size`` and params of the recipe's TSN."""
    import torch

    from tsn_dali.models.complexity import count_flops, count_params

    if device == "meta":
        model = build_on_meta(model_cfg)
    else:
        from tsn_dali.models import build_model
        model = build_model(model_cfg)
    clips = torch.zeros(1, frames, 3, size, size, device=device)
    counts = count_flops(model, clips)
    return {"gflops": sum(counts.values()) / 1e9, "by_op": {k: v / 1e9 for k, v in counts.items()},
            "params": count_params(model), "feature_dim": model.feature_dim}


def _diff(measured: float, reported: float) -> float:
    return 100.0 * (measured - reported) / reported


def recipe_rows(paths: Optional[List[Path]] = None) -> List[dict]:
    """One dict per recipe with ``reported.gflops``: measured vs MMAction2's reported FLOPs and params."""
    rows = []
    for path in paths or list_recipes():
        recipe: Recipe = load_recipe(path)
        rep = recipe.reported
        if rep.gflops is None:
            continue
        m = measure(recipe.model)
        row = {"recipe": Path(path).stem, "backbone": recipe.model.backbone,
               "classes": recipe.model.num_classes, "gflops": m["gflops"], "by_op": m["by_op"],
               "reported_gflops": rep.gflops, "params_m": m["params"] / 1e6, "params": m["params"],
               "reported_params_m": rep.params_m}
        row["gflops_diff"] = _diff(row["gflops"], rep.gflops)
        row["params_diff"] = _diff(row["params_m"], rep.params_m) if rep.params_m else None
        row["flops_ok"] = abs(row["gflops_diff"]) <= 100 * FLOPS_TOLERANCE
        row["params_ok"] = row["params_diff"] is not None and abs(row["params_diff"]) <= 100 * PARAMS_TOLERANCE
        if not row["params_ok"] and row["reported_params_m"]:
            # The reported figure may be another class count's (sthv2 rows repeat the 400-class
            # 24.33M): what the same backbone gives with 400 classes.
            cfg400 = type(recipe.model)(**{**recipe.model.__dict__, "num_classes": 400, "pretrained": None})
            from tsn_dali.models.complexity import count_params

            p400 = count_params(build_on_meta(cfg400)) / 1e6
            row["params_400_m"] = p400
            row["params_400_diff"] = _diff(p400, rep.params_m)
        row["feature_dim"] = m["feature_dim"]
        rows.append(row)
    return rows


def markdown(rows: List[dict]) -> str:
    """The table and its notes."""
    head = ("| recipe | backbone | classes | GFLOPs | reported GFLOPs | diff % | params (M) | reported params (M) "
            "| diff % |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    lines, notes = [], []
    for r in rows:
        mark = ""
        if not r["params_ok"]:
            notes.append(r)
            mark = f" [{len(notes)}]"
        pdiff = f"{r['params_diff']:+.2f}" if r["params_diff"] is not None else "n/a"
        fmark = "" if r["flops_ok"] else " (outside 1%)"
        lines.append(f"| {r['recipe']} | {r['backbone']} | {r['classes']} | {r['gflops']:.2f} | "
                     f"{r['reported_gflops']:g} | {r['gflops_diff']:+.2f}{fmark} | {r['params_m']:.2f}{mark} | "
                     f"{r['reported_params_m']:g} | {pdiff} |")
    text = head + "\n".join(lines) + "\n"
    foot = []
    for i, r in enumerate(notes, 1):
        if "params_400_m" in r:
            foot.append(f"[{i}] {r['recipe']}: MMAction2 reports {r['reported_params_m']:g}M, the 400-class "
                        f"figure, but this row has {r['classes']} classes: its fc has "
                        f"{(400 - r['classes']) * (r['feature_dim'] + 1):,} fewer parameters, "
                        f"{r['params_m']:.2f}M in all. The same model with 400 classes has "
                        f"{r['params_400_m']:.2f}M ({r['params_400_diff']:+.2f}% from the reported figure).")
        else:
            foot.append(f"[{i}] {r['recipe']}: {r['params_diff']:+.2f}% from the reported params.")
    return text + ("\n" + "\n".join(foot) + "\n" if foot else "")


CONVENTION_MD = """\
- **FLOPs are multiply-accumulates** (one MAC counted as one FLOP), over **one test view of
  all its input frames at 224x224: 25 frames for every row** (ResNet-50: 25 x 4.11G =
  102.7G), model in eval mode. This is what MMAction2's reported column holds (MMAction2's
  `tools/analysis_tools/get_flops.py`, mmengine's `get_model_complexity_info`).
- **What is counted** is what mmengine's (fvcore-derived) counter counts: convolutions
  (batch x weight elements x output positions), linear / matmul / bmm (MACs; attention via
  `scaled_dot_product_attention` as its two matmuls), BatchNorm in eval (2 per element with
  affine, 1 without), LayerNorm / GroupNorm (5 per element with affine), adaptive average
  pooling and means (1 per input element). ReLU/GELU, additions, softmax and max/avg
  pooling windows are not counted, as in mmengine.
- **How**: a `TorchDispatchMode` (`tsn_dali.flops.FlopCounter`) sees every aten op of one
  forward of the recipe's TSN built on the *meta* device (shapes only, no compute, so the
  numbers do not depend on the machine); the table `OP_RULES` holds one rule per op.
- **Parameters**: every `nn.Parameter` of the TSN (backbone + fc), buffers such as BN
  running statistics excluded, as mmengine counts them.
"""

NOTES_MD = """\
- Counting convolutions and linear layers only would give ResNet-50 102.18G (-0.51%) and
  MobileOne-S4 74.67G (-1.75%, outside 1%): MMAction2's reported figures include BatchNorm, hence
  the mmengine convention above.
- MobileOne-S4 is counted in its train (multi-branch) form, as MMAction2 reports it: the
  reparameterised deploy form (`model.deploy: true`, `python -m tsn_dali.reparameterize`)
  computes the same function with 74.48G and 13.61M parameters.
- The sthv2 rows' FLOPs include a 174-class fc instead of 400 (0.46M MACs less: invisible).
- `k400_r50` is the README's name for the `k400_r50_1x1x8` row (same model).
- The number of segments (1x1x3, 1x1x8, ...) does not enter: MMAction2 counts 25 frames for
  every row, the test view of 25 clips x 1 crop.
"""


def report(rows: List[dict]) -> str:
    """flops.md: convention, table, footnotes, per-op breakdown."""
    cats = sorted({k for r in rows for k in r["by_op"]})
    breakdown = ["| recipe | " + " | ".join(cats) + " |", "| --- |" + " ---: |" * len(cats)]
    for r in rows:
        breakdown.append(f"| {r['recipe']} | " + " | ".join(f"{r['by_op'].get(c, 0):.3f}" for c in cats) + " |")
    return ("# FLOPs and parameters vs MMAction2's reported figures (its TSN README)\n\n"
            "Made by `python -m tsn_dali.flops` (or `python benchmarks/flops.py`).\n\n"
            "## Convention\n\n" + CONVENTION_MD +
            f"\n## Table\n\nGFLOPs: 10^9 MACs for one {REPORTED_FRAMES}-frame view at {REPORTED_SIZE}x{REPORTED_SIZE}. "
            f"Bounds: FLOPs within {100 * FLOPS_TOLERANCE:g}%, params within {100 * PARAMS_TOLERANCE:g}% "
            "of MMAction2's reported figures; a row outside is marked.\n\n"
            + markdown(rows) + "\n## Notes\n\n" + NOTES_MD
            + "\n## GFLOPs by op category\n\n" + "\n".join(breakdown) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tsn_dali.flops [RECIPE ...] [--out FILE]``: the table, printed and written."""
    parser = cli.ArgumentParser(prog="python -m tsn_dali.flops", description=main.__doc__)
    parser.add_argument("recipes", nargs="*", help="recipe files (default: every recipe in recipes/)")
    parser.add_argument("--out", default=str(RESULTS), help=f"markdown file (default {RESULTS})")
    args = parser.parse_args(argv)
    return cli.run_main(lambda: write_table(args))


def write_table(args) -> int:
    """Print and write the table; 1 where a row is off MMAction2's reported FLOPs."""
    rows = recipe_rows([Path(p) for p in args.recipes] or None)
    print(markdown(rows), end="")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report(rows))
        print(f"\nwritten: {out}")
    bad = [r["recipe"] for r in rows if not r["flops_ok"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(cli.entry(main))
