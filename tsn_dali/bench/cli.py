"""``python -m tsn_dali.bench``: the parts (each a comparison measured interleaved) and the command line."""
from __future__ import annotations

import datetime
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from tsn_dali import cli
from tsn_dali.engine.errors import UsageError
from tsn_dali.bench.environment import device_slug, environment
from tsn_dali.bench.environment import DecoderMonitor
from tsn_dali.bench.interleave import comparison
from tsn_dali.bench.measure import (EndToEndWindow, LoaderWindow, ModelWindow, bench_amp, build_tsn,
                                    loader_warm_steps, make_loader, make_train_step, open_executors, parse_variant,
                                    plan_costs)
from tsn_dali.bench.peers import PEERS, PeerUnavailable, peer_system
from tsn_dali.bench.report import headline, markdown, write_outputs
from tsn_dali.bench.videos import find_videos, generate_videos, reencode
from tsn_dali.config import PROJECT_ROOT, load_recipe
from tsn_dali.engine.amp import loader_dtype

PARTS = ("loader", "model", "e2e", "gop")
GOP_CODECS = ("h264", "vp9")
GOP_VIEWS = ("train", "test")
CODEC_NAMES = {"h264": "H.264", "vp9": "VP9"}


def _log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


class Run:
    """One benchmark run: the recipe, the videos and their index, the executors, the result.

    Every part is a comparison of systems measured interleaved (tsn_dali.bench.interleave):
    loader (each executor variant, and the peers, per view), model and e2e (the step alone
    as the baseline, fed by each executor), gop (each variant and peer per codec, GOP and view)."""

    def __init__(self, args, argv: Sequence[str]):
        self.args = args
        self.recipe = load_recipe(args.recipe, args.overrides)
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu":
            # Denormal floats (tiny gradients once a repeated batch is fitted) slow x86 CPUs
            # down many times over; flushing them to zero keeps step times steady.
            torch.set_flush_denormal(True)
        self.bs = args.batch_size or self.recipe.loader.batch_size
        self.test_bs = args.test_batch_size or self.recipe.loader.test_batch_size
        self.iters, self.warmup, self.rounds = args.iters or 5, args.warmup, args.rounds
        self.work = args.work_dir or os.path.join(tempfile.gettempdir(), "tsn_dali_bench")
        self.variants = [parse_variant(v) for v in args.executors.split(",") if v.strip()]
        self.peers = [p.strip() for p in (args.peers or "").split(",") if p.strip()]
        self.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
        self.paths = self._videos()
        self.index = self._index(self.paths)
        self.result = {"env": environment(self.device, argv), "config": self._config(),
                       "videos": [{k: v for k, v in self.index[p].to_json().items()
                                   if k in ("path", "codec", "width", "height", "num_frames", "fps",
                                            "keyframe_interval", "size", "pix_fmt")} for p in self.paths],
                       "unavailable": {}, "comparisons": [], "parity": [], "complete": False}
        self.executors = {}

    def _videos(self) -> List[str]:
        a = self.args
        paths = find_videos(a.videos, a.prefix) if a.videos else []
        if a.generate:
            paths += generate_videos(os.path.join(self.work, f"generated_{a.generate_codec}"), a.generate,
                                     a.generate_frames, gop=a.generate_gop, codec=a.generate_codec)
        if not paths:
            raise ValueError("--videos: expected at least one video (or --generate N)")
        return paths

    def _index(self, paths):
        from tsn_dali.data.index import build_index

        index = build_index(paths, cache_dir=os.path.join(self.work, "index"), workers=2, progress=False)
        bad = [i for i in (index[p] for p in paths) if not i.ok]
        if bad:
            raise ValueError(f"--videos: {bad[0].path}: {bad[0].error or 'no frames'}")
        return index

    def _config(self) -> dict:
        r, a = self.recipe, self.args
        return {"recipe": r.source, "overrides": list(a.overrides), "backbone": r.model.backbone,
                "num_segments": r.data.num_segments, "input_size": r.data.input_size,
                "short_side": r.data.short_side, "train_pipeline": r.data.train_pipeline,
                "test_pipeline": r.data.test_pipeline, "batch_size": self.bs, "test_batch_size": self.test_bs,
                "iters": self.iters, "warmup": self.warmup, "rounds": self.rounds, "device": str(self.device),
                "dtype": loader_dtype(r, self.device), "amp": bench_amp(r, self.device), "channels_last": True,
                "prefetch": r.loader.prefetch, "num_threads": r.loader.num_threads,
                "decode_workers": r.loader.decode_workers, "decode_sessions": r.loader.decode_sessions,
                "reference_workers": a.reference_workers, "compile": bool(a.compile), "parts": self.parts,
                "executors": [v.label for v in self.variants], "baseline": a.baseline,
                "peers": self.peers, "gop_codec": a.gop_codec, "gops": a.gops, "gop_views": a.gop_views,
                "quick": bool(a.quick),
                "note": a.note or ""}

    def _compare(self, title: str, systems: dict, baseline: Optional[str], **facts) -> None:
        if not systems:
            return
        costs = {name: getattr(system, "costs") for name, system in systems.items() if hasattr(system, "costs")}
        with DecoderMonitor(self.device) as monitor:
            result = comparison(title, systems, baseline, self.rounds, self.warmup, costs=costs,
                                monitor=monitor if self.device.type == "cuda" else None, **facts)
        for row in result["rows"]:
            row.update(facts.get("plan_costs", {}).get(row["system"], {}))
        if monitor.unavailable:
            result["nvdec_unavailable"] = monitor.unavailable
        self.result["comparisons"].append(result)
        self.save(with_chart=False)  # each comparison kept as it ends: a run killed later loses none

    def save(self, with_chart: bool = True) -> None:
        """The results so far into ``--out`` (nothing where it is not set)."""
        if self.args.out:
            self.result["headline"] = headline(self.result)
            write_outputs(self.result, self.args.out, with_chart=with_chart)

    def _loader_systems(self, split: str, paths, index, batch: int, title: str) -> Tuple[dict, dict]:
        systems, planned = {}, {}
        for v in self.variants:
            if v.label not in self.executors:
                continue
            loader = make_loader(self.recipe, split, paths, index, self.executors[v.label], batch,
                                 loader_warm_steps(self.recipe.loader.prefetch) + self.iters, self.device,
                                 handoff=v.handoff)
            systems[v.label] = LoaderWindow(loader, self.iters, self.device)
            planned[v.label] = plan_costs(loader, index)
        for name in self.peers:
            try:
                systems[name], check = peer_system(name, self.recipe, split, paths, index, batch, self.iters,
                                                   self.device, self.args.reference_workers, self.executors)
            except PeerUnavailable as why:
                self.result["unavailable"][f"{name} ({split} view)"] = str(why)
                _log(f"{name}: not measured ({why})")
                continue
            planned[name] = plan_costs(systems[name].planning, index)
            if check:
                self.result["parity"].append(dict(check, peer=name, view=split, comparison=title))
        return systems, planned

    # ------------------------------------------------------------------ parts

    def loader_part(self):
        for split, batch in (("train", self.bs), ("test", self.test_bs)):
            title = f"loader, {split} view"
            systems, planned = self._loader_systems(split, self.paths, self.index, batch, title)
            self._compare(title, systems, self.args.baseline, part="loader", view=split,
                          batch_size=batch, plan_costs=planned)

    def model_e2e_part(self):
        """The trainer's step alone (the baseline) and, with ``e2e``, fed by each executor."""
        from tsn_dali.bench.measure import synthetic_batch

        model, builder = build_tsn(self.recipe.model)
        self.result["config"]["model_builder"] = builder
        step = make_train_step(model, self.recipe, self.device)
        probe = make_loader(self.recipe, "train", self.paths, self.index, None, self.bs, 1, self.device)
        clips, labels = synthetic_batch(self.bs, probe.num_views, self.recipe.data.input_size,
                                        self.recipe.model.num_classes, loader_dtype(self.recipe, self.device), self.device)
        systems = {"model": ModelWindow(step, clips, labels, self.iters, self.device)}
        if self.args.compile:
            compiled = make_train_step(build_tsn(self.recipe.model)[0], self.recipe, self.device, compile=True)
            systems["model compiled"] = ModelWindow(compiled, clips, labels, self.iters, self.device)
        if "e2e" in self.parts:
            for v in self.variants:
                if v.label in self.executors:
                    loader = make_loader(self.recipe, "train", self.paths, self.index, self.executors[v.label],
                                         self.bs, 1 + self.iters, self.device, handoff=v.handoff)
                    systems[f"e2e {v.label}"] = EndToEndWindow(loader, step, self.iters, self.device)
        self._compare("training: the step alone and fed by each loader", systems, "model", part="e2e",
                      view="train", batch_size=self.bs)

    def _gop_videos(self, sources, codec: str, gop: str):
        """``sources`` as they are ('original' in their own codec), or re-encoded as ``codec``
        with keyframes every ``gop`` frames ('original': the encoder's default interval)."""
        own = {self.index[p].codec for p in sources} == {codec}
        if gop == "original" and own:
            return sources
        folder = os.path.join(self.work, f"gop{gop}_{codec}")
        _log(f"GOP {gop}: re-encoding {len(sources)} videos as {codec}")
        ext = ".webm" if codec == "vp9" else ".mp4"
        interval = None if gop == "original" else int(gop)
        return [reencode(p, os.path.join(folder, f"{i:03d}_{Path(p).stem}{ext}"), interval, codec)
                for i, p in enumerate(sources)]

    def gop_part(self):
        """The first ``--gop-videos`` videos per ``--gop-codec`` codec and ``--gops`` GOP
        (``_gop_videos``), each view of ``--gop-views``: one loader comparison per case."""
        from tsn_dali.data.index import build_index

        sources = self.paths[: self.args.gop_videos]
        codecs = [c.strip() for c in self.args.gop_codec.split(",") if c.strip()]
        for codec in codecs:
            for gop in [g.strip() for g in self.args.gops.split(",") if g.strip()]:
                paths = self._gop_videos(sources, codec, gop)
                index = build_index(paths, cache_dir=os.path.join(self.work, "index"), workers=2, progress=False)
                case = (f"{CODEC_NAMES.get(codec, codec)} " if len(codecs) > 1 else "") + f"GOP {gop}"
                facts = {"gop": gop, "codec": codec, "case": case,
                         "keyframe_interval": float(np.mean([index[p].keyframe_interval or 1 for p in paths])),
                         "file_bytes": float(np.mean([index[p].size for p in paths]))}
                for view in [v.strip() for v in self.args.gop_views.split(",") if v.strip()]:
                    batch = self.bs if view == "train" else self.test_bs
                    title = f"{case}, {view} view"
                    systems, planned = self._loader_systems(view, paths, index, batch, title)
                    self._compare(title, systems, self.args.baseline, part="gop", view=view,
                                  batch_size=batch, plan_costs=planned, **facts)

    def __call__(self) -> dict:
        self.executors, self.result["unavailable"] = open_executors(self.variants, self.recipe, self.device,
                                                                    self.args.reference_workers)
        for name, why in self.result["unavailable"].items():
            _log(f"{name}: unavailable ({why})")
        try:
            if "loader" in self.parts:
                self.loader_part()
            if "model" in self.parts or "e2e" in self.parts:
                self.model_e2e_part()
            if "gop" in self.parts and self.args.gop_videos > 0:
                self.gop_part()
        finally:
            for ex in self.executors.values():
                try:
                    ex.close()
                except Exception:
                    pass
        self.result["headline"] = headline(self.result)
        self.result["env"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        self.result["complete"] = True
        return self.result


def run(args, argv: Sequence[str]) -> dict:
    check_args(args)
    if args.quick:
        args.rounds, args.warmup, args.iters = 2, 1, min(args.iters or 1, 1)
        args.gop_videos = min(args.gop_videos, 2)
    return Run(args, argv)()


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


def check_args(args) -> None:
    """The command-line checks argparse cannot do (UsageError: status 2), before any work."""
    for name in ("iters", "warmup", "rounds", "batch_size", "test_batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0 and not (name == "warmup" and value == 0):
            raise UsageError(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    for part in (p.strip() for p in args.parts.split(",")):
        if part and part not in PARTS:
            raise UsageError(f"--parts: unknown part {part!r}; expected some of {', '.join(PARTS)}")
    for text in args.executors.split(","):
        if text.strip():
            parse_variant(text)
    for name, allowed, values in (("--gop-codec", GOP_CODECS, args.gop_codec), ("--gop-views", GOP_VIEWS,
                                                                               args.gop_views)):
        for value in (v.strip() for v in values.split(",")):
            if value and value not in allowed:
                raise UsageError(f"{name}: unknown {value!r}; expected some of {', '.join(allowed)}")
    for peer in (p.strip() for p in (args.peers or "").split(",")):
        if peer and peer not in PEERS:
            raise UsageError(f"--peers: unknown peer {peer!r}; expected some of {', '.join(PEERS)}")


def bench(args, argv: Sequence[str]) -> None:
    """Run the benchmark as the command line says, print and write its results (written
    after each comparison too, marked incomplete until the end)."""
    if not args.out:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        args.out = str(PROJECT_ROOT / "benchmarks" / "results" /
                       f"{device_slug(device)}-{datetime.date.today().isoformat()}")
    result = run(args, argv)
    files = write_outputs(result, args.out)
    print(markdown(result))
    _log(f"wrote {', '.join(files.values())}")


__all__ = ["PARTS", "Run", "main", "parse_args", "run"]
