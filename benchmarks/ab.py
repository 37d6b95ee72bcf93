"""Before/after: one command timed in two (or more) checkouts, interleaved in rounds.

    python benchmarks/ab.py --checkout before=/tmp/old --checkout after=. --rounds 5 \\
        --out benchmarks/results/ab-cpu-DATE -- python -m tsn_dali.demo --quick \\
        --data-dir /tmp/ab_demo --work-dir {work}

    # the loader part: clips/s of every system the bench measured, per comparison
    python benchmarks/ab.py --metric bench --checkout before=/tmp/old --checkout after=. \\
        --rounds 3 -- python -m tsn_dali.bench recipes/k400_r50.yaml --videos DIR \\
        --parts loader --executors auto,reference --rounds 3 --out {work}/bench

Each round runs the command once in every checkout (its own PYTHONPATH, its working
directory), the order rotated one step a round, after one untimed warm-up run of each
(``--warmup``), so that what else the machine does at a given minute falls on every
checkout alike. ``{work}`` in the command becomes a fresh folder per run, ``{checkout}``
the checkout's path. Reported per checkout: the median wall time, min-max, and the ratio
of its median to the first checkout's (the baseline); a difference is called "within
spread" where the two min-max ranges overlap. A run that fails stops the comparison with
its output (a timing of a failure is no timing).

``--metric bench``: the command is ``python -m tsn_dali.bench ... --out {work}/bench``; after
each run its ``results.json`` is read and every comparison's systems give their median
clips/s (the loader part without the start-up, indexing or peers around it). Reported per
comparison and system: each checkout's median over the runs, min-max, ratio to the
baseline checkout's, and the verdict (higher is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsn_dali.bench.interleave import rotated, verdict  # noqa: E402  (the bench's rules for rounds and verdicts)


def compare(times: Dict[str, List[float]], baseline: str) -> List[dict]:
    """One row per checkout: median, min, max, ratio to the baseline's median, and whether
    its min-max range overlaps the baseline's ("within spread")."""
    base = times[baseline]
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append({"checkout": name, "median_s": med, "min_s": min(values), "max_s": max(values),
                     "runs_s": list(values), "ratio": med / statistics.median(base),
                     "verdict": verdict(values, base, name == baseline, higher_is_faster=False)})
    return rows


def run_once(command: Sequence[str], checkout: str, work_root: str, timeout: float, metric: str = "wall"):
    """One run of ``command`` in ``checkout``: its wall time (s), or with ``metric="bench"``
    ``{"comparison / system": median clips/s}`` from the bench's ``{work}/bench/results.json``."""
    work = tempfile.mkdtemp(prefix="ab_", dir=work_root)
    argv = [part.replace("{work}", work).replace("{checkout}", checkout) for part in command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    run = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        tail = (run.stdout + run.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{checkout}: {' '.join(argv)} exited {run.returncode}: " + " | ".join(tail))
    if metric == "wall":
        return seconds
    return bench_rates(os.path.join(work, "bench", "results.json"))


def bench_rates(path: str) -> Dict[str, float]:
    """``{"comparison / system": median clips/s}`` of a bench run's results.json."""
    if not os.path.isfile(path):
        raise RuntimeError(f"--metric bench: no {path}; give the bench --out {{work}}/bench")
    with open(path) as fh:
        result = json.load(fh)
    return {f"{c['title']} / {r['system']}": r["clips_per_s"]["median"]
            for c in result["comparisons"] for r in c["rows"]}


def measure(checkouts: Dict[str, str], command: Sequence[str], rounds: int, warmup: int,
            timeout: float, metric: str = "wall") -> Tuple[Dict[str, list], List[List[str]]]:
    """Per checkout, one figure a round (wall seconds, or a dict of bench rates); the orders."""
    names = list(checkouts)
    times: Dict[str, list] = {name: [] for name in names}
    orders = []
    with tempfile.TemporaryDirectory(prefix="ab_work_") as work_root:
        for _ in range(warmup):
            for name in names:
                run_once(command, checkouts[name], work_root, timeout, metric)
        for r in range(rounds):
            order = rotated(names, r)
            orders.append(order)
            for name in order:
                times[name].append(run_once(command, checkouts[name], work_root, timeout, metric))
                shown = f"{times[name][-1]:.2f} s" if metric == "wall" else f"{len(times[name][-1])} systems"
                print(f"round {r + 1}/{rounds} {name}: {shown}", flush=True)
    return times, orders


def compare_rates(rates: Dict[str, List[Dict[str, float]]], baseline: str) -> List[dict]:
    """One row per bench system (``comparison / system``) and checkout: median clips/s over
    the runs, min-max, ratio to the baseline checkout's median, verdict (higher is faster)."""
    keys = [k for k in rates[baseline][0] if all(k in run for runs in rates.values() for run in runs)]
    rows = []
    for key in keys:
        base = [run[key] for run in rates[baseline]]
        for name, runs in rates.items():
            values = [run[key] for run in runs]
            rows.append({"system": key, "checkout": name, "median": statistics.median(values),
                         "min": min(values), "max": max(values), "runs": values,
                         "ratio": statistics.median(values) / statistics.median(base),
                         "verdict": verdict(values, base, name == baseline)})
    return rows


def _header(title: str, command: Sequence[str], checkouts: Dict[str, str], orders, note: str, warmup: int,
            metric: str) -> List[str]:
    load = os.getloadavg()
    flag = " --metric bench" if metric == "bench" else ""
    lines = [f"# {title}: `{' '.join(command)}`", "",
             f"- command: `python benchmarks/ab.py{flag} "
             f"{' '.join(f'--checkout {k}={v}' for k, v in checkouts.items())} "
             f"--rounds {len(orders)} --warmup {warmup} -- {' '.join(command)}`",
             f"- machine: {os.cpu_count()} CPU cores; load average at the end {load[0]:.2f}",
             f"- rounds: {len(orders)}, order rotated each round ({' / '.join(','.join(o) for o in orders)})"]
    return lines + ([f"- note: {note}"] if note else [])


def report(rows: List[dict], command: Sequence[str], checkouts: Dict[str, str], orders, note: str,
           warmup: int = 1) -> str:
    lines = _header("Before/after", command, checkouts, orders, note, warmup, "wall")
    lines += ["", "| checkout | median s | min-max s | ratio to baseline | verdict |", "|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['checkout']} | {row['median_s']:.2f} | {row['min_s']:.2f}-{row['max_s']:.2f} | "
                     f"{row['ratio']:.3f} | {row['verdict']} |")
    return "\n".join(lines) + "\n"


def report_rates(rows: List[dict], command: Sequence[str], checkouts: Dict[str, str], orders, note: str,
                 warmup: int = 1) -> str:
    lines = _header("Before/after, the bench's clips/s", command, checkouts, orders, note, warmup, "bench")
    lines += ["", "| comparison / system | checkout | median clips/s | min-max | ratio to baseline | verdict |",
              "|---|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['checkout']} | {r['median']:.3g} | {r['min']:.3g}-{r['max']:.3g} | "
                     f"{r['ratio']:.3f} | {r['verdict']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/ab.py", description=__doc__.splitlines()[0])
    p.add_argument("--checkout", action="append", required=True, metavar="NAME=PATH",
                   help="a checkout to time; the first is the baseline")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take")
    p.add_argument("--out", help="folder for results.md and results.json")
    p.add_argument("--note", default="")
    p.add_argument("--metric", choices=("wall", "bench"), default="wall",
                   help="wall: the command's wall time; bench: the clips/s of a bench run (--out {work}/bench)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command after --")
    if args.rounds < 1 or args.warmup < 0:
        p.error("--rounds must be >= 1 and --warmup >= 0")
    checkouts = {}
    for item in args.checkout:
        name, sep, path = item.partition("=")
        if not sep or not os.path.isdir(path):
            p.error(f"--checkout {item}: expected NAME=PATH to a folder")
        checkouts[name] = os.path.abspath(path)
    if args.metric == "bench" and not any("{work}" in part for part in command):
        p.error("--metric bench: the command must write its results under {work} (--out {work}/bench)")
    try:
        times, orders = measure(checkouts, command, args.rounds, args.warmup, args.timeout, args.metric)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.metric == "bench":
        rows = compare_rates(times, next(iter(checkouts)))
        text = report_rates(rows, command, checkouts, orders, args.note, args.warmup)
    else:
        rows = compare(times, next(iter(checkouts)))
        text = report(rows, command, checkouts, orders, args.note, args.warmup)
    print(text, end="")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(text)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"command": command, "checkouts": checkouts, "orders": orders, "rows": rows,
                       "metric": args.metric, "note": args.note}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
