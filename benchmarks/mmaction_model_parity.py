"""MMAction2 1.2.0's own TSN of each recipe, loaded here: scores, FLOPs and params side by side.

    # a throwaway environment: MMAction2 is never a dependency of tsn_dali
    python -m venv --system-site-packages /tmp/mmenv
    /tmp/mmenv/bin/pip install --no-deps mmaction2==1.2.0 mmpretrain==1.2.0
    /tmp/mmenv/bin/pip install mmengine==0.10.7 mmcv-lite==2.1.0 model-index einops
    PYTHONPATH=. /tmp/mmenv/bin/python benchmarks/mmaction_model_parity.py [--recipes k400_r50_1x1x3,...]

For each recipe (default: every one with ``reported.config``, one per MMAction2 config):

1. MMAction2's recognizer is built from MMAction2's own config (the package's
   ``mmaction/.mim/configs/recognition/tsn/<reported.config>``) with nothing pretrained
   (no download): random weights, and random BatchNorm statistics and affine parameters,
   so that a misplaced norm layer would show.
2. It is saved as a training run saves it: an mmengine ``Runner`` around it, with the
   config's optimizer and LR schedule and a few training-log scalars in its message hub,
   calls ``Runner.save_checkpoint`` (``meta``, ``state_dict``, ``message_hub`` whose
   HistoryBuffers pickle ``builtins.getattr``, ``optimizer``, ``param_schedulers``).
   MobileOne's deploy form is that file with ``state_dict`` replaced by the fused model's
   (``switch_to_deploy``), as MMAction2's ``tools/convert/reparameterize_model.py`` writes
   it; the Swin rows are also saved in timm 0.6's layout (MMAction2's released Swin-B file,
   2022-09), converted back from the model's own weights.
3. tsn_dali loads the file through ``tsn_dali.test.load_weights`` (the safe reader, no
   ``--allow-pickle``) into the recipe's model.
4. Both get identical frames (uint8, ``--clips`` clips of ``--views`` views at ``--size``):
   MMAction2 through ``test_step`` (its data preprocessor, ``average_clips='prob'``),
   tsn_dali normalised with the recipe's mean/std through ``TSN.predict``, both float32.
   Reported: the largest score difference, whether every clip's argmax agrees, and FLOPs
   (one view of ``--flops-frames`` frames at ``--flops-size``; MMAction2's counted by
   mmengine's ``get_model_complexity_info`` over ``extract_feat`` up to the head, as its
   ``tools/analysis_tools/get_flops.py``; ours by ``tsn_dali.flops``) and parameters.

Two things MMAction2 1.2.0's configs need here, both said in the row's note:
``mmcls.ResNeXt`` is built as ``mmpretrain.ResNeXt`` where mmcls (MMAction2 1.x's name for
mmpretrain before 1.0) is not installed: the same class and weight names; and the Swin
1x1x8 config, which lacks ``feature_shape='NHWC'``, fails with timm >= 0.9 (whose Swin
returns NHWC features) unless its backbone gets it, as the 1x1x3 config has. Two gaps of
the mmaction2 1.2.0 wheel are bridged (``import_mmaction_models``). Writes
``results.json`` and ``results.md`` to ``--out`` (default
``benchmarks/results/mmaction_model_parity-cpu-<date>/``); exit 1 where a row disagrees
(``agrees``: scores within ``--tolerance``, argmax equal).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import re
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOLERANCE = 1e-4  # largest score difference (probabilities) still called agreement: float32 rounding


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", help="comma-separated recipe names (default: every recipe with reported.config)")
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--views", type=int, default=3)
    p.add_argument("--size", type=int, default=224, help="frame size (Swin needs 224)")
    p.add_argument("--flops-frames", type=int, default=25, help="frames of the view FLOPs are counted on (25: "
                                                                "MMAction2's reported figures)")
    p.add_argument("--flops-size", type=int, default=224)
    p.add_argument("--no-flops", action="store_true")
    p.add_argument("--tolerance", type=float, default=TOLERANCE)
    p.add_argument("--out", default=None)
    return p


if __name__ == "__main__":  # --help and a bad command line answer before torch is imported
    build_parser().parse_args()

import torch  # noqa: E402

from tsn_dali.config import PROJECT_ROOT, RECIPES_DIR, list_recipes, load_recipe  # noqa: E402

NOTE_MMCLS = "mmcls.ResNeXt built as mmpretrain.ResNeXt"
NOTE_NHWC = "backbone.feature_shape='NHWC' added (timm >= 0.9)"


def import_mmaction_models():
    """``mmaction.models``, bridging two gaps of the mmaction2 1.2.0 wheel: its
    ``models/localizers/__init__`` imports ``drn``, which the wheel lacks (an empty module
    stands in: no DRN localizer), and ``mmaction.utils.dependency`` imports the
    ``importlib_metadata`` backport (the standard library's ``importlib.metadata`` stands in
    where it is not installed). Nothing a TSN uses is replaced."""
    import importlib.metadata

    try:
        import importlib_metadata  # noqa: F401
    except ImportError:
        sys.modules["importlib_metadata"] = importlib.metadata
    import mmaction

    if not (Path(mmaction.__file__).parent / "models" / "localizers" / "drn").is_dir():
        for name in ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn"):
            module = sys.modules.setdefault(name, types.ModuleType(name))
            module.__path__ = []
        sys.modules["mmaction.models.localizers.drn.drn"].DRN = None
    return importlib.import_module("mmaction.models")


def quiet_mmengine() -> None:
    """mmengine's info lines (each layer's init, the FLOP counter's unsupported operators)
    and the OpenMMLab packages' warnings off: the rows are the output."""
    import logging
    import warnings

    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel(logging.ERROR)
    for package in ("mmcv", "mmengine", "mmaction", "mmpretrain", "timm"):
        warnings.filterwarnings("ignore", module=package)


def config_path(recipe) -> Path:
    import mmaction

    return Path(mmaction.__file__).parent / ".mim" / "configs" / "recognition" / "tsn" / recipe.reported.config


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _timm_major_minor() -> tuple:
    import timm

    return tuple(int(x) for x in re.findall(r"\d+", timm.__version__)[:2])


def mmaction_model_cfg(cfg) -> tuple:
    """(the config's ``model`` with nothing pretrained, notes on what was changed)."""
    model = cfg.model
    notes = []
    backbone = model.backbone
    backbone.pop("init_cfg", None)
    if "pretrained" in backbone:
        backbone["pretrained"] = False if isinstance(backbone["pretrained"], bool) else None
    kind = backbone["type"]
    if kind.startswith("mmcls.") and not _installed("mmcls"):
        backbone["type"] = "mmpretrain." + kind[len("mmcls."):]
        notes.append(NOTE_MMCLS)
    if kind.startswith("timm.swin") and "feature_shape" not in backbone and _timm_major_minor() >= (0, 9):
        backbone["feature_shape"] = "NHWC"
        notes.append(NOTE_NHWC)
    return model, notes


def randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Random running statistics and affine parameters in every BatchNorm / LayerNorm."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.5 + 0.75)
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


class _OneClip(torch.utils.data.Dataset):
    """A stand-in training set: the Runner only reads its ``metainfo`` when saving."""

    metainfo = dict(source="tsn_dali mmaction_model_parity")

    def __len__(self):
        return 1

    def __getitem__(self, i):
        raise IndexError("not read: nothing is trained")


def save_as_runner(model, cfg, work_dir: Path, state: Optional[dict] = None) -> Path:
    """``Runner.save_checkpoint`` of ``model`` with the config's optimizer and LR schedule
    and training-log scalars in the message hub (HistoryBuffers), as a training run's
    CheckpointHook saves: ``work_dir/epoch_1.pth``. ``state``: what the file's
    ``state_dict`` holds instead (a ``before_save_checkpoint`` hook swaps it in), as
    reparameterize_model.py keeps the training checkpoint around the fused weights."""
    from mmengine.dataset import pseudo_collate
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class SwapState(Hook):
        def before_save_checkpoint(self, runner, checkpoint):
            checkpoint["state_dict"] = state

    loader = torch.utils.data.DataLoader(_OneClip(), batch_size=1, collate_fn=pseudo_collate)
    runner = Runner(model=model, work_dir=str(work_dir), train_dataloader=loader,
                    train_cfg=dict(by_epoch=True, max_epochs=int(cfg.train_cfg.get("max_epochs", 1))),
                    optim_wrapper=cfg.optim_wrapper, param_scheduler=cfg.param_scheduler,
                    default_scope="mmaction", cfg=cfg, randomness=dict(seed=0),
                    experiment_name=f"parity_{os.getpid()}_{time.monotonic_ns()}",
                    log_level="ERROR")
    if state is not None:
        runner.register_hook(SwapState())
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
    for step, loss in enumerate((5.99, 5.97, 5.95)):  # what LoggerHook and the train loop record
        runner.message_hub.update_scalar("train/loss", loss)
        runner.message_hub.update_scalar("train/lr", 0.01)
        runner.message_hub.update_scalar("train/time", 0.5)
        runner.message_hub.update_info("iter", step + 1)
    runner.save_checkpoint(str(work_dir), "epoch_1.pth")
    return work_dir / "epoch_1.pth"


def timm06_swin_state(state: dict, backbone: torch.nn.Module) -> dict:
    """A state dict whose ``backbone.*`` is a timm >= 0.9 Swin, in timm 0.6's layout (the
    released 2022-09 file's): stage i's PatchMerging (``layers.i.downsample``, i = 1..3)
    ends stage i - 1 instead, and the attention buffers are saved."""
    out = {}
    for key, value in state.items():
        out[re.sub(r"^backbone\.layers\.(\d+)\.downsample\.",
                   lambda m: f"backbone.layers.{int(m.group(1)) - 1}.downsample.", key)] = value
    for key, value in backbone.named_buffers():
        if key.endswith(("relative_position_index", "attn_mask")):
            out["backbone." + key] = value.clone()
    return out


def mmaction_scores(model, frames: torch.Tensor) -> torch.Tensor:
    """MMAction2's ``test_step`` scores [clips, classes] of uint8 frames [clips, V, 3, H, W]."""
    from mmaction.structures import ActionDataSample

    model.eval()
    with torch.no_grad():
        out = model.test_step(dict(inputs=list(frames), data_samples=[ActionDataSample() for _ in frames]))
    return torch.stack([o.pred_score.float() for o in out])


def mmaction_logits(model, frames: torch.Tensor) -> torch.Tensor:
    """MMAction2's class scores before the softmax (``extract_feat`` through the head, test
    mode: the consensus over each clip's views, then ``fc_cls``) [clips, classes]."""
    from mmaction.structures import ActionDataSample

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(frames), data_samples=[ActionDataSample() for _ in frames]))
        return model.extract_feat(data["inputs"], stage="head", test_mode=True)[0].float()


def our_scores(model, frames: torch.Tensor, recipe) -> tuple:
    """(probabilities, logits) [clips, classes] of uint8 frames, normalised as the loader does."""
    mean = torch.tensor(recipe.data.mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(recipe.data.std).view(1, 1, 3, 1, 1)
    clips = (frames.float() - mean) / std
    model.eval()
    with torch.no_grad():
        return model.predict(clips), model(clips).float()


def mmaction_complexity(model, frames: int, size: int) -> tuple:
    """(GFLOPs, params) as MMAction2's get_flops.py counts: mmengine's
    ``get_model_complexity_info`` over one view of ``frames`` frames, through the head."""
    from mmengine.analysis import get_model_complexity_info

    class Forward(torch.nn.Module):
        def __init__(self, recognizer):
            super().__init__()
            self.recognizer = recognizer

        def forward(self, x):
            return self.recognizer.extract_feat(x, stage="head", test_mode=True)[0]

    model.eval()
    info = get_model_complexity_info(Forward(model), inputs=(torch.randn(1, frames, 3, size, size),),
                                     show_table=False, show_arch=False)
    return info["flops"] / 1e9, info["params"]


def verdict(row: dict, tolerance: float = TOLERANCE) -> bool:
    """A row agrees: its scores within ``tolerance`` everywhere and every argmax equal."""
    return row.get("max_diff") is not None and row["max_diff"] <= tolerance and bool(row["argmax_equal"])


def compare(name: str, args, work: Path) -> List[dict]:
    """The rows of one recipe: its own layout, and for MobileOne the deploy form, for Swin
    timm 0.6's layout as well."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import_mmaction_models()
    from mmaction.registry import MODELS
    from tsn_dali.flops import measure
    from tsn_dali.models import build_model
    from tsn_dali.test import load_weights

    name = str(name if Path(name).is_file() else RECIPES_DIR / f"{name}.yaml")
    recipe = load_recipe(name, ["model.pretrained=null"])
    cfg = Config.fromfile(str(config_path(recipe)))
    init_default_scope("mmaction")
    model_cfg, notes = mmaction_model_cfg(cfg)
    backbone_type = model_cfg.backbone["type"]
    if backbone_type.startswith("mmpretrain.") and not _installed("mmpretrain"):
        return [{"recipe": recipe.name, "layout": backbone_type, "skipped": "needs mmpretrain", "notes": notes}]
    torch.manual_seed(0)
    mm = MODELS.build(model_cfg)
    mm.init_weights()
    randomise_norms(mm, seed=1)
    mm.eval()
    ckpt = save_as_runner(mm, cfg, work / recipe.name)
    gen = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (args.clips, args.views, 3, args.size, args.size), dtype=torch.uint8,
                           generator=gen)
    variants = [("as saved", ckpt, [], mm)]
    if recipe.model.backbone.startswith("swin"):
        old = timm06_swin_state(mm.state_dict(), mm.backbone)
        variants.append(("timm 0.6 layout", save_as_runner(mm, cfg, work / f"{recipe.name}_timm06", old), [], mm))
    if recipe.model.backbone.startswith("mobileone"):
        variants = [("train form", ckpt, [], mm)]
        deploy = MODELS.build(model_cfg)
        deploy.load_state_dict(mm.state_dict())
        deploy.backbone.switch_to_deploy()
        deploy.eval()
        variants.append(("deploy form", save_as_runner(mm, cfg, work / f"{recipe.name}_deploy", deploy.state_dict()),
                         ["model.deploy=true"], deploy))
    rows = []
    for layout, path, overrides, source in variants:
        ours_recipe = load_recipe(name, ["model.pretrained=null", *overrides])
        torch.manual_seed(123)
        ours = build_model(ours_recipe.model)
        kind = load_weights(ours, path, ours_recipe)  # the safe reader: nothing in the file runs
        theirs, their_logits = mmaction_scores(source, frames), mmaction_logits(source, frames)
        mine, my_logits = our_scores(ours, frames, ours_recipe)
        row = {"recipe": recipe.name, "config": recipe.reported.config, "layout": layout, "kind": kind,
               "file_mb": round(path.stat().st_size / 2 ** 20, 1), "notes": notes,
               "max_diff": float((theirs - mine).abs().max()), "max_score": float(theirs.max()),
               "max_logit_diff": float((their_logits - my_logits).abs().max()),
               "max_logit": float(their_logits.abs().max()),
               "argmax_equal": bool(torch.equal(theirs.argmax(1), mine.argmax(1)))}
        if not args.no_flops:
            row["mm_gflops"], row["mm_params"] = mmaction_complexity(source, args.flops_frames, args.flops_size)
            measured = measure(ours_recipe.model, frames=args.flops_frames, size=args.flops_size)
            row["our_gflops"], row["our_params"] = measured["gflops"], measured["params"]
        row["agrees"] = verdict(row, args.tolerance)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


def _pct(a, b) -> str:
    return "-" if a is None or b is None or not a else f"{100.0 * (b - a) / a:+.1e}%"


def format_row(r: dict) -> str:
    if r.get("skipped"):
        return f"{r['recipe']:<26} {r['layout']:<16} skipped: {r['skipped']}"
    return (f"{r['recipe']:<26} {r['layout']:<16} max |diff| {r['max_diff']:.2e} (scores up to "
            f"{r['max_score']:.3g}; logits {r['max_logit_diff']:.2e} of {r['max_logit']:.3g}), argmax {'equal' if r['argmax_equal'] else 'DIFFERS'}, GFLOPs "
            f"{_num(r.get('mm_gflops'), '.4f')} / {_num(r.get('our_gflops'), '.4f')} "
            f"({_pct(r.get('mm_gflops'), r.get('our_gflops'))}), params "
            f"{_num(r.get('mm_params'), ',')} / {_num(r.get('our_params'), ',')}"
            + (f" ({'; '.join(r['notes'])})" if r["notes"] else ""))


def write_markdown(path: Path, result: dict) -> None:
    env = result["env"]
    lines = ["# MMAction2 1.2.0's own TSN models loaded in tsn_dali", "",
             f"{env['date']}, {env['cpu']}, mmaction2 {env['mmaction2']}, mmengine {env['mmengine']}, "
             f"mmpretrain {env['mmpretrain']}, timm {env['timm']}, torch {env['torch']}. Scores on "
             f"{env['clips']} clips x {env['views']} views of random uint8 frames at {env['size']}x{env['size']}, "
             f"float32; FLOPs for one view of {env['flops_frames']} frames at {env['flops_size']}.", "",
             "| recipe | layout | max abs score difference (largest score) | max abs logit difference (largest "
             "logit) | argmax equal | GFLOPs MMAction2 / ours (difference) | params MMAction2 / ours | note |",
             "| --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in result["rows"]:
        if r.get("skipped"):
            lines.append(f"| {r['recipe']} | {r['layout']} | skipped: {r['skipped']} | | | | | |")
            continue
        lines.append(f"| {r['recipe']} | {r['layout']} | {r['max_diff']:.1e} ({r['max_score']:.3g}) | "
                     f"{r['max_logit_diff']:.1e} ({r['max_logit']:.3g}) | "
                     f"{'yes' if r['argmax_equal'] else 'NO'} | {_num(r.get('mm_gflops'), '.2f')} / "
                     f"{_num(r.get('our_gflops'), '.2f')} ({_pct(r.get('mm_gflops'), r.get('our_gflops'))}) | "
                     f"{_num(r.get('mm_params'), ',')} / "
                     f"{_num(r.get('our_params'), ',')} | {'; '.join(r['notes'])} |")
    lines += ["", f"Command: `{env['command']}`", ""]
    path.write_text("\n".join(lines))


def default_recipes() -> List[str]:
    """Every recipe with ``reported.config``, one per MMAction2 config (an alias such as
    k400_r50 = k400_r50_1x1x8 gives way to the row's own name)."""
    by_config = {}
    for path in list_recipes():
        recipe = load_recipe(path)
        if recipe.reported.config:
            by_config[recipe.reported.config] = max(by_config.get(recipe.reported.config, ""), path.stem, key=len)
    return sorted(by_config.values())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import mmengine

        quiet_mmengine()
        import_mmaction_models()
        import mmaction
    except ImportError as exc:
        print(f"error: {exc}: run this with MMAction2 1.2.0 and mmengine installed (see the docstring)",
              file=sys.stderr)
        return 1
    from tsn_dali.bench.environment import cpu_name, version

    names = args.recipes.split(",") if args.recipes else default_recipes()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmaction_model_parity_") as tmp:
        for name in names:
            rows += compare(name, args, Path(tmp))
    argv_used = list(argv if argv is not None else sys.argv[1:])
    env = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_name(),
           "mmaction2": mmaction.__version__, "mmengine": mmengine.__version__, "mmpretrain": version("mmpretrain"),
           "timm": version("timm"), "torch": torch.__version__, "clips": args.clips, "views": args.views,
           "size": args.size, "flops_frames": args.flops_frames, "flops_size": args.flops_size,
           "command": "python benchmarks/mmaction_model_parity.py " + " ".join(argv_used)}
    out = Path(args.out or PROJECT_ROOT / "benchmarks" / "results" /
               f"mmaction_model_parity-cpu-{datetime.date.today().isoformat()}")
    out.mkdir(parents=True, exist_ok=True)
    result = {"env": env, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    write_markdown(out / "results.md", result)
    compared = [r for r in rows if not r.get("skipped")]
    bad = [r for r in compared if not r["agrees"]]
    worst = max((r["max_diff"] for r in compared), default=None)
    print(f"mmaction_model_parity: {len(compared)} rows compared ({len(rows) - len(compared)} skipped), "
          f"largest score difference {worst}, {len(bad)} disagree; wrote {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
