"""One benchmark run (``Run``): the recipe, the videos and their index, the executors, and
the parts, each a comparison measured interleaved (tsn_dali.bench.interleave). The command
line that makes one is tsn_dali.bench.cli."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from tsn_dali.bench.environment import DecoderMonitor, environment
from tsn_dali.bench.interleave import comparison
from tsn_dali.bench.options import CODEC_NAMES
from tsn_dali.bench.measure import (EndToEndWindow, LoaderWindow, ModelWindow, bench_amp, build_tsn, loader_warm_steps,
                                    make_loader,
                                    make_train_step, open_executors, parse_variant, plan_costs)
from tsn_dali.bench.peers import PeerUnavailable, peer_system
from tsn_dali.bench.report import headline, log, write_outputs
from tsn_dali.bench.videos import find_videos, generate_videos, reencode
from tsn_dali.config import load_recipe
from tsn_dali.engine.amp import loader_dtype


class Run:
    """One benchmark run: the recipe, the videos and their index, the executors, the result.

    Every part is a comparison of systems measured interleaved (tsn_dali.bench.interleave):
    loader (each executor variant, and the peers, per view), model and e2e (the step alone
    as the baseline, fed by each executor), gop (each variant and peer per codec, GOP and view)."""

    def __init__(self, args, argv: Sequence[str], recipe=None):
        self.args = args
        self.recipe = recipe if recipe is not None else load_recipe(args.recipe, args.overrides)
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
                log(f"{name}: not measured ({why})")
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
        log(f"GOP {gop}: re-encoding {len(sources)} videos as {codec}")
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
            log(f"{name}: unavailable ({why})")
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


__all__ = ["Run"]
