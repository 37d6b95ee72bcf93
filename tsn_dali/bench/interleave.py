"""Systems compared in one process, interleaved: the only comparison these benchmarks make.

A *system* is a callable ``system(round_no) -> clips/s`` that measures one timed window
(its own warm-up step inside, untimed). ``run_rounds`` calls every system once untimed
(``warmup`` rounds), then ``rounds`` times each, the order rotated one step a round, so that
what else the machine did at a given minute falls on every system alike. ``compare`` gives
each system its median, spread (min-max, quartiles), ratio to a named baseline, and says
whether the difference from the baseline lies within the spread (the two min-max ranges
overlap): only a difference beyond it is a result.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tsn_dali.bench.stats import summarize
from tsn_dali.errors import one_line

System = Callable[[int], float]


def rotated(names: Sequence[str], round_no: int) -> List[str]:
    """The order of round ``round_no``: ``names`` rotated left by ``round_no``."""
    k = round_no % len(names) if names else 0
    return list(names[k:]) + list(names[:k])


def run_rounds(systems: Dict[str, System], rounds: int, warmup: int = 1, log=None
               ) -> Tuple[Dict[str, List[float]], Dict[str, str], List[List[str]], Dict[str, List[Tuple[float, float]]]]:
    """(rates per system, errors per system, the order of each round, the (start, end) times
    of each system's timed windows). A system that raises is dropped from later rounds and
    its error kept (one line)."""
    names = list(systems)
    rates: Dict[str, List[float]] = {n: [] for n in names}
    spans: Dict[str, List[Tuple[float, float]]] = {n: [] for n in names}
    errors: Dict[str, str] = {}
    orders: List[List[str]] = []

    def call(name: str, round_no: int, timed: bool) -> None:
        t0 = time.time()
        try:
            value = float(systems[name](round_no))
        except Exception as exc:  # a failed system is a row that says why, not a lost run
            errors[name] = one_line(exc, named=True)
            if log:
                log(f"{name}: failed: {errors[name]}")
            return
        if timed:
            rates[name].append(value)
            spans[name].append((t0, time.time()))
            if log:
                log(f"round {round_no + 1}/{rounds} {name}: {value:.3g} clips/s")

    for w in range(warmup):
        for name in names:
            if name not in errors:
                call(name, -1 - w, timed=False)
    for r in range(rounds):
        order = [n for n in rotated(names, r) if n not in errors]
        orders.append(order)
        for name in order:
            if name not in errors:
                call(name, r, timed=True)
    return rates, errors, orders, spans


def verdict(values: Sequence[float], base: Sequence[float], is_baseline: bool, higher_is_faster: bool = True) -> str:
    """'baseline', 'within spread' (min-max ranges overlap), or faster/slower beyond it;
    ``higher_is_faster``: the values are rates (clips/s), else times (seconds)."""
    if is_baseline:
        return "baseline"
    if min(values) <= max(base) and min(base) <= max(values):
        return "within spread"
    higher = summarize(values)["median"] > summarize(base)["median"]
    return "faster beyond spread" if higher == higher_is_faster else "slower beyond spread"


def compare(rates: Dict[str, List[float]], baseline: Optional[str]) -> List[dict]:
    """One row per system with figures: ``clips_per_s`` (median, min, max, q1, q3, runs),
    ``ratio`` (its median over the baseline's) and ``verdict``."""
    base = rates.get(baseline) if baseline else None
    rows = []
    for name, values in rates.items():
        if not values:
            continue
        row = {"system": name, "clips_per_s": summarize(values)}
        if base:
            row["ratio"] = row["clips_per_s"]["median"] / summarize(base)["median"]
            row["verdict"] = verdict(values, base, name == baseline)
        rows.append(row)
    return rows


def comparison(title: str, systems: Dict[str, System], baseline: Optional[str], rounds: int, warmup: int = 1,
               costs: Optional[Dict[str, Callable[[], dict]]] = None, monitor=None, **facts) -> dict:
    """Run ``systems`` interleaved and describe the result: ``{"title", "baseline",
    "rounds", "orders", "rows": [...], "errors": {...}, **facts}``. ``costs[name]()`` adds
    per-system counters (frames fed and the like) to its row; ``monitor`` (a
    DecoderMonitor already running) adds each system's NVDEC utilisation over its windows.
    Where the baseline has no figures (``baseline_missing``), no row has a ratio."""

    def log(text):
        print(f"[bench] {title}: {text}", file=sys.stderr, flush=True)

    rates, errors, orders, spans = run_rounds(systems, rounds, warmup, log)
    missing = baseline_missing(baseline, rates, errors)
    if missing:
        log(f"no ratios: {missing}")
    rows = compare(rates, None if missing else baseline)
    for row in rows:
        name = row["system"]
        if costs and name in costs:
            row.update(costs[name]())
        if monitor is not None:
            util = monitor.summary(spans[name])
            if util is not None:
                row["nvdec_utilisation"] = util
    out = {"title": title, "baseline": baseline, "rounds": rounds, "warmup": warmup, "orders": orders,
           "rows": rows, "errors": errors, **facts}
    if missing:
        out["baseline_missing"] = missing
    return out


def baseline_missing(baseline: Optional[str], rates: Dict[str, List[float]], errors: Dict[str, str]) -> Optional[str]:
    """Why the named baseline has no figures (it failed, or was not among the systems), or
    None. Without it no row gets a ratio: the baseline is never moved to another system,
    whose ratio would then read as the one asked for."""
    if baseline is None or rates.get(baseline):
        return None
    if baseline in errors:
        return f"the baseline {baseline} failed: {errors[baseline]}"
    return f"the baseline {baseline} was not measured (not among this comparison's systems)"


__all__ = ["System", "baseline_missing", "compare", "comparison", "rotated", "run_rounds", "verdict"]
