"""The GPU run's results on one page: checks, and the targets met or not.

    python benchmarks/gpu_report.py OUT_DIR

Reads what ``benchmarks/gpu_run.sh`` wrote under OUT_DIR (check/gpu_check.json,
loader_original/, loader_gop16/ and train/results.json, env.log) and writes
OUT_DIR/results.md and OUT_DIR/results.json: every check's status, and the targets:

- the dali-gpu loader at least 5x the reference loader (16 workers), train view, on the
  original and on the GOP-16 clips;
- end to end with dali-gpu at least 90% of the step alone.

A target is "met" or "missed" only where its ratio lies beyond the spread of the
comparison (else "within spread"); "not measured" where its part did not run. On a CPU
dry run the DALI executor is dali-cpu, and the targets are shown for it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

LOADER_TARGET, E2E_TARGET = 5.0, 0.90


def _load(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _row(result: Optional[dict], title: str, system: str) -> Optional[dict]:
    for c in (result or {}).get("comparisons", []):
        if c["title"] == title:
            return next((r for r in c["rows"] if r["system"] == system), None)
    return None


def target(row: Optional[dict], goal: float) -> dict:
    """What a row says of a target: its ratio, and met / missed / within spread / not measured."""
    if row is None or "ratio" not in row:
        return {"status": "not measured"}
    ratio = row["ratio"]
    if row["verdict"] == "within spread" and goal > 1:
        status = "within spread"
    else:
        status = "met" if ratio >= goal else "missed"
    return {"status": status, "ratio": ratio, "verdict": row["verdict"],
            "clips_per_s": row["clips_per_s"]["median"]}


def report(out: Path) -> dict:
    checks = (_load(out / "check" / "gpu_check.json") or {}).get("checks", [])
    loaders = {name: _load(out / name / "results.json") for name in ("loader_original", "loader_gop16")}
    train = _load(out / "train" / "results.json")
    device = next((r["config"]["device"] for r in [*loaders.values(), train] if r), "cuda")
    dali = "dali-cpu" if device == "cpu" else "dali-gpu"
    targets = {}
    for name, result in loaders.items():
        for view in ("train", "test"):
            goal = LOADER_TARGET if view == "train" else 1.0
            targets[f"{dali} loader / reference, {view} view, {name.split('_')[1]} clips (>= {goal:g}x)"] = \
                target(_row(result, f"loader, {view} view", dali), goal)
    targets[f"end to end with {dali} / step alone (>= {E2E_TARGET:.0%})"] = \
        target(_row(train, "training: the step alone and fed by each loader", f"e2e {dali}"), E2E_TARGET)
    return {"device": device, "checks": checks, "targets": targets,
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
    lines += ["", "## Targets", "", "| target | ratio | clips/s | status |", "| --- | ---: | ---: | --- |"]
    for name, t in res["targets"].items():
        ratio = f"{t['ratio']:.2f}x" if "ratio" in t else ""
        rate = f"{t['clips_per_s']:.0f}" if "clips_per_s" in t else ""
        lines.append(f"| {name} | {ratio} | {rate} | {t['status']} |")
    lines += ["", "Each ratio is of medians within one interleaved comparison (its table is in the part's "
              "results.md); a target is met or missed only beyond the comparison's spread.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python benchmarks/gpu_report.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    res = report(out)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    text = markdown(res, out)
    (out / "results.md").write_text(text)
    print(text)
    return 1 if res["failed_checks"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
