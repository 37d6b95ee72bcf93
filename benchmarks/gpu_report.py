"""The GPU run's results on one page: checks, the targets met or not, and what was not measured.

    python benchmarks/gpu_report.py OUT_DIR

Reads what ``benchmarks/gpu_run.sh`` wrote under OUT_DIR (summary.md, check/gpu_check.json,
loader_original/, loader_gop16/ and train/results.json) and writes OUT_DIR/results.md and
OUT_DIR/results.json: every check's status, and the targets:

- the dali-gpu loader at least 5x the reference loader (16 workers), train view, on the
  original and on the GOP-16 clips;
- end to end with dali-gpu at least 90% of the step alone.

A target is "met" or "missed" only where its ratio lies beyond the spread of the
comparison (else "within spread"); "not measured", with the reason, where its part did not
run or stopped before it, where its system failed, or where its baseline (the reference
loader, the step alone) did not run: a ratio to another system is never read as the
target's. Every comparison, system and check a part did not reach is listed as missing.
view_integrity counts only where its control (the hand-off guard bypassed) failed; else it
is UNPROVEN. On a CPU dry run the DALI executor is dali-cpu, and the targets are shown for it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

LOADER_TARGET, E2E_TARGET = 5.0, 0.90
E2E_TITLE = "training: the step alone and fed by each loader"
BENCHES = {"loader_original": ("loader, train view", "loader, test view"),
           "loader_gop16": ("loader, train view", "loader, test view"),
           "train": (E2E_TITLE,)}


def _load(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def part_status(out: Path) -> Dict[str, str]:
    """Each part's status in summary.md (ok, FAILED (exit n), TIMED OUT after n s)."""
    status = {}
    try:
        lines = (out / "summary.md").read_text().splitlines()
    except OSError:
        return status
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] not in ("part", "---") and not cells[0].startswith("-"):
            status[cells[0]] = cells[1]
    return status


def _stopped(part: str, status: Dict[str, str]) -> str:
    said = status.get(part)
    return f"{part} did not run" if said is None else f"{part} {said}" if said != "ok" else f"{part} ended"


def find_row(result: Optional[dict], part: str, title: str, system: str,
             status: Dict[str, str]) -> Tuple[Optional[dict], Optional[str]]:
    """(the row of ``system`` in comparison ``title`` of ``part``, None) or (None, why not)."""
    if result is None:
        return None, f"{_stopped(part, status)} before writing any result"
    c = next((c for c in result.get("comparisons", []) if c["title"] == title), None)
    if c is None:
        return None, f"{_stopped(part, status)} before '{title}'"
    row = next((r for r in c["rows"] if r["system"] == system), None)
    if row is None:
        why = c.get("errors", {}).get(system) or result.get("unavailable", {}).get(system)
        return None, f"{system}: {why}" if why else f"{system} was not among the systems measured"
    if "ratio" not in row:
        return None, c.get("baseline_missing") or f"no baseline in '{title}'"
    return row, None


def target(row: Optional[dict], goal: float, reason: Optional[str] = None) -> dict:
    """What a row says of a target: its ratio, and met / missed / within spread / not measured."""
    if row is None or "ratio" not in row:
        return {"status": "not measured", "reason": reason or "no figures"}
    ratio = row["ratio"]
    if row["verdict"] == "within spread" and goal > 1:
        status = "within spread"
    else:
        status = "met" if ratio >= goal else "missed"
    return {"status": status, "ratio": ratio, "verdict": row["verdict"],
            "clips_per_s": row["clips_per_s"]["median"]}


def expected_systems(result: dict, part: str) -> List[str]:
    """The systems a bench part's comparisons were to have (from its config)."""
    cfg = result.get("config", {})
    executors = list(cfg.get("executors", []))
    if part == "train":
        return ["model"] + [f"e2e {e}" for e in executors]
    return executors + list(cfg.get("peers", []))


def missing(checks_result: Optional[dict], benches: Dict[str, Optional[dict]], status: Dict[str, str]) -> List[dict]:
    """Every check, comparison and system the run was to measure and did not, with why."""
    gaps = []
    if checks_result is None:
        gaps.append({"part": "check", "what": "every check", "why": f"{_stopped('check', status)} before writing"})
    else:
        done = {c["check"] for c in checks_result.get("checks", [])} | ({"speed"} if checks_result.get("speed") else set())
        for name in checks_result.get("planned", []):
            if name not in done:
                gaps.append({"part": "check", "what": name, "why": f"{_stopped('check', status)} before it"})
    for part, titles in BENCHES.items():
        result = benches[part]
        for title in titles:
            c = next((c for c in (result or {}).get("comparisons", []) if c["title"] == title), None)
            if c is None:
                when = "before writing any result" if result is None else f"before '{title}'"
                gaps.append({"part": part, "what": title, "why": f"{_stopped(part, status)} {when}"})
                continue
            measured = {r["system"] for r in c["rows"]}
            for system in expected_systems(result, part):
                if system not in measured:
                    _, why = find_row(result, part, title, system, status)
                    gaps.append({"part": part, "what": f"{title}: {system}", "why": why})
    return gaps


def report(out: Path) -> dict:
    status = part_status(out)
    checks_result = _load(out / "check" / "gpu_check.json")
    checks = (checks_result or {}).get("checks", [])
    benches = {name: _load(out / name / "results.json") for name in BENCHES}
    device = next((r["config"]["device"] for r in benches.values() if r and "config" in r), "cuda")
    dali = "dali-cpu" if device == "cpu" else "dali-gpu"
    targets = {}
    for name in ("loader_original", "loader_gop16"):
        for view in ("train", "test"):
            goal = LOADER_TARGET if view == "train" else 1.0
            row, why = find_row(benches[name], name, f"loader, {view} view", dali, status)
            targets[f"{dali} loader / reference, {view} view, {name.split('_')[1]} clips (>= {goal:g}x)"] = \
                target(row, goal, why)
    row, why = find_row(benches["train"], "train", E2E_TITLE, f"e2e {dali}", status)
    targets[f"end to end with {dali} / step alone (>= {E2E_TARGET:.0%})"] = target(row, E2E_TARGET, why)
    return {"device": device, "checks": checks, "targets": targets, "missing": missing(checks_result, benches, status),
            "failed_checks": sum(c["status"] == "FAIL" for c in checks)}


def markdown(res: dict, out: Path) -> str:
    lines = [f"# GPU run: results ({res['device']})", ""]
    summary = out / "summary.md"
    if summary.is_file():
        lines += summary.read_text().splitlines()[1:] + [""]
    lines += ["## Checks", "", "| check | subject | status | detail |", "| --- | --- | --- | --- |"]
    lines += [f"| {c['check']} | {c['subject']} | {c['status']} | {c['detail']} |" for c in res["checks"]]
    if not res["checks"]:
        lines.append("| (none ran) | | | |")
    lines += ["", "view_integrity counts only where its control, the same batches with the hand-off guard "
              "bypassed, failed (PASS); UNPROVEN: the control passed too (or could not run), so this run could "
              "not have caught the race.", ""]
    lines += ["## Targets", "", "| target | ratio | clips/s | status |", "| --- | ---: | ---: | --- |"]
    for name, t in res["targets"].items():
        ratio = f"{t['ratio']:.2f}x" if "ratio" in t else ""
        rate = f"{t['clips_per_s']:.0f}" if "clips_per_s" in t else ""
        said = t["status"] + (f": {t['reason']}" if "reason" in t else "")
        lines.append(f"| {name} | {ratio} | {rate} | {said} |")
    lines += ["", "Each ratio is of medians within one interleaved comparison (its table is in the part's "
              "results.md); a target is met or missed only beyond the comparison's spread.", ""]
    if res["missing"]:
        lines += ["## Not measured", "", "| part | what | why |", "| --- | --- | --- |"]
        lines += [f"| {m['part']} | {m['what']} | {m['why']} |" for m in res["missing"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_report.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT_DIR", help="the folder benchmarks/gpu_run.sh wrote")
    out = Path(parser.parse_args(argv).out)
    res = report(out)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    text = markdown(res, out)
    (out / "results.md").write_text(text)
    print(text)
    return 1 if res["failed_checks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
