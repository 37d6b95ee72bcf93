"""Before/after: one command timed in two (or more) checkouts, interleaved in rounds.

    python benchmarks/ab.py --checkout before=/tmp/old --checkout after=. --rounds 5 \\
        --out benchmarks/results/ab-cpu-DATE -- python -m tsn_dali.demo --quick \\
        --data-dir /tmp/ab_demo --work-dir {work}

Each round runs the command once in every checkout (its own PYTHONPATH, its working
directory), the order rotated one step a round, after one untimed warm-up run of each
(``--warmup``), so that what else the machine does at a given minute falls on every
checkout alike. ``{work}`` in the command becomes a fresh folder per run, ``{checkout}``
the checkout's path. Reported per checkout: the median wall time, min-max, and the ratio
of its median to the first checkout's (the baseline); a difference is called "within
spread" where the two min-max ranges overlap. A run that fails stops the comparison with
its output (a timing of a failure is no timing).
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


def run_once(command: Sequence[str], checkout: str, work_root: str, timeout: float) -> float:
    work = tempfile.mkdtemp(prefix="ab_", dir=work_root)
    argv = [part.replace("{work}", work).replace("{checkout}", checkout) for part in command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    run = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    if run.returncode != 0:
        tail = (run.stdout + run.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{checkout}: {' '.join(argv)} exited {run.returncode}: " + " | ".join(tail))
    return seconds


def measure(checkouts: Dict[str, str], command: Sequence[str], rounds: int, warmup: int,
            timeout: float) -> Tuple[Dict[str, List[float]], List[List[str]]]:
    names = list(checkouts)
    times: Dict[str, List[float]] = {name: [] for name in names}
    orders = []
    with tempfile.TemporaryDirectory(prefix="ab_work_") as work_root:
        for _ in range(warmup):
            for name in names:
                run_once(command, checkouts[name], work_root, timeout)
        for r in range(rounds):
            order = rotated(names, r)
            orders.append(order)
            for name in order:
                times[name].append(run_once(command, checkouts[name], work_root, timeout))
                print(f"round {r + 1}/{rounds} {name}: {times[name][-1]:.2f} s", flush=True)
    return times, orders


def report(rows: List[dict], command: Sequence[str], checkouts: Dict[str, str], orders, note: str,
           warmup: int = 1) -> str:
    load = os.getloadavg()
    lines = [f"# Before/after: `{' '.join(command)}`", "",
             f"- command: `python benchmarks/ab.py {' '.join(f'--checkout {k}={v}' for k, v in checkouts.items())} "
             f"--rounds {len(orders)} --warmup {warmup} -- {' '.join(command)}`",
             f"- machine: {os.cpu_count()} CPU cores; load average at the end {load[0]:.2f}",
             f"- rounds: {len(orders)}, order rotated each round ({' / '.join(','.join(o) for o in orders)})"]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", "| checkout | median s | min-max s | ratio to baseline | verdict |", "|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['checkout']} | {row['median_s']:.2f} | {row['min_s']:.2f}-{row['max_s']:.2f} | "
                     f"{row['ratio']:.3f} | {row['verdict']} |")
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
    try:
        times, orders = measure(checkouts, command, args.rounds, args.warmup, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = compare(times, next(iter(checkouts)))
    text = report(rows, command, checkouts, orders, args.note, args.warmup)
    print(text, end="")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(text)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"command": command, "checkouts": checkouts, "orders": orders, "rows": rows,
                       "note": args.note}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
