"""Video index benchmark: probe throughput, and warm start of a Kinetics-size cache.

    python benchmarks/index_bench.py [--videos DIR | --generate 32] [--entries 240000] [--out DIR]

1. Probe throughput: ``build_index`` without a cache over real videos (``--videos``, or
   ``--generate N`` Kinetics-like clips: 340x256, 300 frames at 30 fps, H.264 with x264's
   default GOP), with 1 probe thread and with one per core; videos/s and videos/s per core,
   median of ``--repeats`` runs.
2. Warm start: ``--entries`` fabricated entries (400 class folders of empty files, so that
   the size/mtime check really stats every file) written as the cache, then
   ``build_index`` over all of them in a fresh process with the probe stubbed to fail (a
   warm start probes nothing): seconds (parse / check / index) and memory (RSS growth and
   peak), for today's VideoInfo and for one with ~10 keyframe numbers and five more fields
   per video (what a richer probe adds).
3. The same warm start on 2 gloo ranks (file:// rendezvous): each rank checks its half and
   writes its share, then every rank reads both shares.

Writes ``results.json`` and ``results.md`` to ``--out``
(default ``benchmarks/results/index-cpu-<date>/``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from tsn_dali.data.index import build as index_build, cache as index_cache  # noqa: E402
from tsn_dali.bench.environment import cpu_name  # noqa: E402
from tsn_dali.data.index.video_index import VideoInfo  # noqa: E402


@dataclass
class WiderInfo(VideoInfo):
    """Today's VideoInfo plus the fields a richer probe adds."""

    keyframes: list = field(default_factory=list)
    pix_fmt: str = ""
    bit_depth: int = 8
    profile: str = ""
    coded_width: int = 0
    coded_height: int = 0


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- 1. probe throughput


def probe_throughput(paths, repeats: int, cores: int) -> dict:
    """Videos/s of a cold build with 1 probe thread and with one per core, the two measured
    interleaved (tsn_dali.bench.interleave: an untimed round, then ``repeats`` rounds, the
    order rotated), with the median, min-max and ratio of each."""
    from tsn_dali.bench.interleave import compare, run_rounds
    from tsn_dali.data.index.build import build_index

    per_cpu_s = {}

    def system(workers):
        def window(round_no):
            start, cpu0 = time.perf_counter(), time.process_time()
            index = build_index(paths, cache_dir=None, workers=workers, progress=False)
            assert not index.bad, index.report()
            if round_no >= 0:
                per_cpu_s.setdefault(workers, []).append(len(paths) / (time.process_time() - cpu0))
            return len(paths) / (time.perf_counter() - start)
        return window

    threads = sorted({1, cores})
    rates, errors, orders, _ = run_rounds({f"{w} thread(s)": system(w) for w in threads}, repeats, warmup=1)
    if errors:
        raise RuntimeError(f"probe throughput: {errors}")
    rows = {r["system"]: r for r in compare(rates, "1 thread(s)")}
    out = {"videos": len(paths), "cores": cores, "runs": {}, "orders": orders}
    for w in threads:
        row = rows[f"{w} thread(s)"]
        out["runs"][w] = {"videos_per_s": row["clips_per_s"]["median"], "all": row["clips_per_s"]["runs"],
                          "min": row["clips_per_s"]["min"], "max": row["clips_per_s"]["max"],
                          "ratio_to_1_thread": row["ratio"], "verdict": row["verdict"],
                          "videos_per_cpu_s": statistics.median(per_cpu_s[w])}
    out["per_core"] = out["runs"][cores]["videos_per_s"] / cores
    out["single_thread"] = out["runs"][1]["videos_per_s"]
    return out


# --------------------------------------------------------------------------- 2. warm start


def fabricate(folder: Path, entries: int, wide: bool) -> list:
    """``entries`` empty files in 400 class folders, Kinetics-style names; returns the paths."""
    paths = []
    for i in range(entries):
        cls = folder / f"class_{i % 400:03d}_doing_something"
        if i < 400:
            cls.mkdir(parents=True, exist_ok=True)
        path = cls / f"{i:011d}_{i % 300:06d}_{i % 300 + 10:06d}.mp4"
        path.touch()
        paths.append(str(path))
    return paths


def write_cache(cache: Path, paths: list, wide: bool) -> float:
    """The cache of ``paths`` (values as a real probe gives them); returns seconds to save."""
    cls = WiderInfo if wide else VideoInfo
    fields = [f for f in cls.__dataclass_fields__]
    rows = []
    for i, path in enumerate(paths):
        st = os.stat(path)
        extra = dict(keyframes=list(range(0, 300, 30)), pix_fmt="yuv420p", bit_depth=8,
                     profile="High", coded_width=352, coded_height=256) if wide else {}
        info = cls(path=path, num_frames=250 + i % 50, width=340, height=256, fps=29.97,
                   codec="h264", keyframe_interval=250.0 / (1 + i % 3), size=st.st_size,
                   mtime=float(st.st_mtime), **extra)
        rows.append([getattr(info, f) for f in fields])
    saved, index_cache.VideoInfo = index_cache.VideoInfo, cls
    try:
        start = time.perf_counter()
        index_cache.IndexCache(cache).save(rows)
        return time.perf_counter() - start
    finally:
        index_cache.VideoInfo = saved


WARM_CHILD = r"""
import gc, json, os, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
import av
from index_bench import WiderInfo, _rss_mib, _peak_mib
from tsn_dali.data.index import build as index_build, cache as index_cache, video_index
if {wide!r}:
    index_cache.VideoInfo = WiderInfo
def no_probe(path):
    raise AssertionError("a warm start probed " + path)
video_index.probe_video = no_probe
paths = json.load(open({paths!r}))
gc.collect()
rss0 = _rss_mib()
start, cpu0 = time.perf_counter(), time.process_time()
index = index_build.build_index(paths, cache_dir={cache!r}, progress=False)
total, cpu = time.perf_counter() - start, time.process_time() - cpu0
assert index.stats["probed"] == 0 and len(index) == len(paths)
gc.collect()
rss_index, peak = _rss_mib(), _peak_mib()
# where the time goes (a second pass, after the figures above)
t0 = time.perf_counter()
cache = index_cache.IndexCache({cache!r}).load()
t1 = time.perf_counter()
hits, todo = index_cache.check_cached(paths, cache, index_build.default_workers())
t2 = time.perf_counter()
again = video_index.VideoIndex(hits[p] for p in paths)
t3 = time.perf_counter()
print(json.dumps(dict(build_index_s=total, build_index_cpu_s=cpu, load_s=t1 - t0, check_s=t2 - t1, index_s=t3 - t2,
                      rss_start_mib=rss0, rss_with_index_mib=rss_index, peak_mib=peak,
                      entries=len(index))))
"""


def warm_start(work: Path, paths: list, wide: bool) -> dict:
    cache = work / ("cache_wide" if wide else "cache")
    save_s = write_cache(cache, paths, wide)
    listing = work / "paths.json"
    listing.write_text(json.dumps(paths))
    code = WARM_CHILD.format(root=str(ROOT), bench=str(Path(__file__).parent), wide=wide,
                             paths=str(listing), cache=str(cache))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    out["save_s"] = save_s
    out["file_mib"] = os.path.getsize(cache / "video_index.json") / 2 ** 20
    out["index_mib"] = out["rss_with_index_mib"] - out["rss_start_mib"]
    return out


# --------------------------------------------------------------------------- 3. two ranks


def _rank_main(rank, world, work, cache, listing, out):
    import torch.distributed as dist

    from tsn_dali.data.index import video_index
    from tsn_dali.data.index.build import build_index

    video_index.probe_video = lambda path: (_ for _ in ()).throw(AssertionError(path))
    paths = json.load(open(listing))
    dist.init_process_group("gloo", init_method=f"file://{work}/rendezvous", rank=rank, world_size=world)
    rss0 = _rss_mib()
    start, cpu0 = time.perf_counter(), time.process_time()
    index = build_index(paths, cache_dir=cache, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    assert index.stats["probed"] == 0 and len(index) == len(paths)
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"seconds": seconds, "cpu_s": cpu, "rss_growth_mib": _rss_mib() - rss0, "peak_mib": _peak_mib()}))
    dist.destroy_process_group()


def two_ranks(work: Path, paths: list) -> dict:
    import torch.multiprocessing as mp

    listing = work / "paths.json"
    listing.write_text(json.dumps(paths))
    out = work / "ranks"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (work / "rendezvous").unlink(missing_ok=True)
    mp.start_processes(_rank_main, args=(2, str(work), str(work / "cache"), str(listing), str(out)),
                       nprocs=2, start_method="spawn")
    return {f"rank{r}": json.loads((out / f"rank{r}.json").read_text()) for r in range(2)}


# --------------------------------------------------------------------------- report


def markdown(res: dict) -> str:
    p, lines = res["probe"], []
    lines += [f"# Video index: probe throughput and warm start ({res['cpu']})", "",
              f"- date: {res['date']}; CPUs: {res['cores']}; load average at start {res['load_start']}, "
              f"at end {res['load_end']}", f"- command: `{res['command']}`"]
    if res.get("note"):
        lines.append(f"- note: {res['note']}")
    lines += ["", "## Probe throughput (no cache)", "",
              f"{p['videos']} videos: {res['videos_desc']}; the thread counts measured interleaved in this "
              f"process: one untimed round, then {res['repeats']} rounds, the order rotated; median (min-max).", "",
              "| probe threads | videos/s | ratio to 1 thread | videos per CPU-second |", "| --- | --- | --- | --- |"]
    lines += [f"| {w} | {r['videos_per_s']:.1f} ({r['min']:.1f}-{r['max']:.1f}) | {r['ratio_to_1_thread']:.2f}x "
              f"({r['verdict']}) | {r['videos_per_cpu_s']:.1f} |" for w, r in p["runs"].items()]
    lines += ["", f"**{p['per_core']:.1f} videos/s per core** with {p['cores']} threads on {p['cores']} cores "
              f"({p['single_thread']:.1f} videos/s on one thread); a probe costs "
              f"{1000 / p['runs'][1]['videos_per_cpu_s']:.0f} ms of CPU time (decoder threads included).", "",
              f"## Warm start, {res['entries']:,} cached entries", "",
              "Each layout in a fresh process, the two interleaved; the run with the median time of "
              f"{res['warm'][next(iter(res['warm']))]['rounds']} is shown.", "",
              "| VideoInfo | cache file | save | parse | stat + check | VideoIndex | `build_index` all told (CPU time) | index memory (RSS growth) | peak RSS |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, w in res["warm"].items():
        lines.append(f"| {name} | {w['file_mib']:.0f} MiB | {w['save_s']:.2f} s | {w['load_s']:.2f} s | "
                     f"{w['check_s']:.2f} s | {w['index_s']:.2f} s | {w['build_index_s']:.2f} s ({w['build_index_cpu_s']:.2f} s) | "
                     f"{w['index_mib']:.0f} MiB | {w['peak_mib']:.0f} MiB |")
    if res.get("two_ranks"):
        lines += ["", "## Warm start on 2 gloo ranks (today's VideoInfo)", "",
                  "| rank | `build_index` (CPU time) | RSS growth | peak RSS (torch and gloo included) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r} | {v['seconds']:.2f} s ({v['cpu_s']:.2f} s) | {v['rss_growth_mib']:.0f} MiB | {v['peak_mib']:.0f} MiB |"
                  for r, v in res["two_ranks"].items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", help="folder of videos to probe (searched recursively)")
    ap.add_argument("--generate", type=int, default=32, help="Kinetics-like clips to generate without --videos")
    ap.add_argument("--entries", type=int, default=240_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="/tmp/tsn_dali_index_bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / f"index-cpu-{time.strftime('%Y-%m-%d')}"))
    ap.add_argument("--warm-rounds", type=int, default=1,
                    help="warm starts of each VideoInfo layout, interleaved (the median run is reported)")
    ap.add_argument("--no-ranks", action="store_true", help="skip the 2-rank warm start")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cores = index_build.default_workers()
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": cpu_name(), "cores": cores,
           "load_start": [round(x, 2) for x in os.getloadavg()], "entries": args.entries,
           "repeats": args.repeats, "note": args.note,
           "command": shlex.join(["python", "benchmarks/index_bench.py", *(argv or sys.argv[1:])])}
    if args.videos:
        folder = Path(args.videos)
        res["videos_desc"] = f"from {folder}"
    else:
        folder = work / "k400like"
        subprocess.run([sys.executable, "-m", "tsn_dali.data.media.synthetic", str(folder), "--videos",
                        str(args.generate), "--classes", str(max(1, min(args.generate, 8))), "--val-fraction", "0", "--frames", "300", "--size", "340x256",
                        "--codec", "h264", "--fps", "30", "--quiet"], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        res["videos_desc"] = "generated Kinetics-like clips, 340x256, 300 frames at 30 fps, H.264, x264's default GOP"
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix in (".mp4", ".webm", ".avi", ".mkv"))
    res["probe"] = probe_throughput(paths, args.repeats, cores)
    print(f"probe: {res['probe']['per_core']:.1f} videos/s per core", flush=True)

    fab = work / "fabricated"
    shutil.rmtree(fab, ignore_errors=True)
    fake = fabricate(fab / "videos", args.entries, wide=False)
    res["warm"] = {}
    variants = {"today's fields": False, "+ 10 keyframes and 5 fields": True}
    runs = {name: [] for name in variants}
    from tsn_dali.bench.interleave import rotated

    for r in range(args.warm_rounds):  # interleaved: the order rotated each round
        for name in rotated(list(variants), r):
            runs[name].append(warm_start(fab, fake, variants[name]))
    for name, results in runs.items():  # the run with the median build time
        results.sort(key=lambda w: w["build_index_s"])
        res["warm"][name] = dict(results[len(results) // 2], rounds=len(results),
                                 build_index_s_all=[w["build_index_s"] for w in results])
        print(f"warm start ({name}): {res['warm'][name]['build_index_s']:.2f} s, "
              f"{res['warm'][name]['index_mib']:.0f} MiB", flush=True)
    if not args.no_ranks:
        res["two_ranks"] = two_ranks(fab, fake)
    shutil.rmtree(fab, ignore_errors=True)
    res["load_end"] = [round(x, 2) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "results.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
