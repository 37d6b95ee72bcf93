"""The benchmark's outputs: progress lines, headline ratios, markdown tables, a bar chart, the JSON."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional


def log(text: str) -> None:
    """A progress line on stderr, ``[bench] text``."""
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _row(comparison: dict, system: str) -> Optional[dict]:
    return next((r for r in comparison["rows"] if r["system"] == system), None)


def headline(result: dict) -> dict:
    """Ratios of medians, each from one interleaved comparison: every loader against the
    comparison's baseline (the reference loader) per view and per GOP, GOP slices against
    whole files, and end to end against the step alone."""
    out = {"loader_vs_baseline": {}, "gop_vs_baseline": {}, "sliced_vs_whole": {}, "end_to_end_vs_model": {}}
    for c in result["comparisons"]:
        for r in c["rows"]:
            if r.get("verdict") in (None, "baseline"):
                continue
            entry = {"ratio": r["ratio"], "verdict": r["verdict"], "baseline": c["baseline"]}
            if c["part"] == "loader":
                out["loader_vs_baseline"][f"{r['system']} {c['view']}"] = entry
            elif c["part"] == "gop":
                out["gop_vs_baseline"][f"{r['system']} {_case(c)}"] = entry
            elif c["part"] == "e2e" and r["system"].startswith("e2e "):
                out["end_to_end_vs_model"][r["system"][4:]] = entry
        if c["part"] in ("loader", "gop"):
            for r in c["rows"]:
                whole = _row(c, f"{r['system']}+whole")
                if whole and "frames_fed_per_clip" in r and "frames_fed_per_clip" in whole:  # DALI decoded
                    where = _case(c) if c["part"] == "gop" else f"{c['view']} view"
                    out["sliced_vs_whole"][f"{r['system']} {where}"] = \
                        r["clips_per_s"]["median"] / whole["clips_per_s"]["median"]
    return out


def _case(c: dict) -> str:
    """A GOP comparison's name in the headline: 'GOP 16' (train view), 'VP9 GOP 16 test view'."""
    case = c.get("case", f"GOP {c['gop']}")
    return case if c.get("view", "train") == "train" else f"{case} {c['view']} view"


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _fmt(stats: Optional[dict]) -> str:
    """``median (min–max)``, three significant digits (whole numbers from 100)."""
    if not stats:
        return "n/a"
    return f"{_num(stats['median'])} ({_num(stats['min'])}–{_num(stats['max'])})"


def _fed(r: dict) -> str:
    if "frames_fed_per_clip" in r:
        return f"{r['frames_fed_per_clip']:.1f}"
    if "frames_path_frames_per_clip" in r:
        return f"{r['frames_path_frames_per_clip']:.1f} (decoded outside DALI)"
    return "n/a"


def _gop_decoded(r: dict) -> str:
    if "gop_frames_decoded_per_clip" in r:
        return f"{r['gop_frames_decoded_per_clip']:.1f} of {r['gop_packets_fed_per_clip']:.1f} fed"
    return "n/a"


def _decoded(r: dict) -> str:
    return f"{r['frames_decoded_per_clip']:.1f}" if "frames_decoded_per_clip" in r else "n/a"


def _paths(r: dict) -> str:
    paths = r.get("paths")
    return ", ".join(f"{k} {v}" for k, v in paths.items()) if paths else "n/a"


def _bytes(r: dict) -> str:
    return f"{r['bytes_per_clip'] / 1024:.0f} KiB" if "bytes_per_clip" in r else "n/a"


def _nvdec(r: dict) -> str:
    u = r.get("nvdec_utilisation")
    return f"{u['mean']:.0f}% (max {u['max']:.0f}%)" if u else "n/a"


def _wait(r: dict) -> str:
    w = r.get("data_wait_share")
    return f"{100 * w['median']:.0f}% ({100 * w['min']:.0f}–{100 * w['max']:.0f}%)" if w else ""


def _ratio(r: dict) -> str:
    if "ratio" not in r:
        return ""
    mark = "" if r["verdict"] in ("baseline", "within spread") else " **"
    return f"{r['ratio']:.2f}x{mark} ({r['verdict']})"


def _header(result: dict) -> list:
    env, cfg = result["env"], result["config"]
    kinds = ", ".join(sorted({"{codec} {width}x{height}".format(**v) for v in result["videos"]}))
    lines = [
        f"# Throughput: {Path(cfg['recipe']).name} on {env['device']}",
        "",
        f"- date: {env['date']}",
        f"- device: {env['device']} ({env['device_type']}); CPUs: {env['cpu_count']} "
        f"({env['cpus_usable']} usable), load average at start {env['load_average_at_start']}"
        + (f", at the end {env['load_average_at_end']}" if env.get("load_average_at_end") else ""),
        f"- versions: torch {env['torch']}, DALI {env['dali']}, timm {env['timm']}, "
        f"torchvision {env['torchvision']}, PyAV {env['pyav']}, decord {env['decord']}, Python {env['python']}",
        f"- command: `{env['command']}`",
        f"- model: {cfg['backbone']}, {cfg['num_segments']} segments, {cfg['input_size']} px, "
        f"batch {cfg['batch_size']} (test view batch {cfg['test_batch_size']}), AMP {cfg['amp']}, "
        f"loader dtype {cfg['dtype']}, channels_last",
        f"- timing: every table is one comparison, its systems measured in this process interleaved: "
        f"{cfg['warmup']} untimed round(s), then {cfg['rounds']} rounds, each system once a round (a "
        f"window of {cfg['iters']} step(s) after an untimed one), the order rotated each round; clips/s "
        f"is the median (min–max) over the rounds; a ratio marked ** lies beyond the spread of both",
        f"- videos: {len(result['videos'])} ({kinds}); reference workers {cfg['reference_workers']}, "
        f"DALI threads {cfg['num_threads']}, decode workers {cfg['decode_workers']}, NVDEC sessions "
        f"{cfg['decode_sessions']}, prefetch {cfg['prefetch']}",
    ]
    for name, why in result["unavailable"].items():
        lines.append(f"- {name}: not measured ({why})")
    if cfg.get("note"):
        lines.append(f"- note: {cfg['note']}")
    return lines


def _table(c: dict) -> list:
    e2e = c["part"] == "e2e"
    title = c["title"] + (f" (keyframe every {c['keyframe_interval']:.1f} frames on average, "
                          f"{c['file_bytes'] / 1024:.0f} KiB a file)" if c["part"] == "gop" else "")
    base = c["baseline"] + (f" (no ratios: {c['baseline_missing']})" if c.get("baseline_missing") else "")
    lines = ["", f"## {title[0].upper()}{title[1:]}", "", f"batch {c['batch_size']}; baseline: {base}", ""]
    if e2e:
        lines += ["| system | clips/s | ratio to the baseline | share of time blocked waiting for data |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {r['system']} | {_fmt(r['clips_per_s'])} | {_ratio(r)} | {_wait(r)} |" for r in c["rows"]]
    else:
        lines += ["| system | clips/s | ratio to the baseline | views/clip | frames sampled/clip | frames fed/clip "
                  "(counted) | GOP decoder: frames decoded/clip (counted) | decord est./clip | bytes fed/clip | "
                  "clips per path | NVDEC busy |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in c["rows"]:
            lines.append(f"| {r['system']} | {_fmt(r['clips_per_s'])} | {_ratio(r)} | {r.get('views_per_clip', '')} | "
                         f"{r.get('frames_sampled_per_clip', float('nan')):.1f} | {_fed(r)} | {_gop_decoded(r)} | "
                         f"{_decoded(r)} | {_bytes(r)} | {_paths(r)} | {_nvdec(r)} |")
    for name, error in c["errors"].items():
        lines.append(f"| {name} | failed: {error} | | |" + (" | | | | | | |" if not e2e else ""))
    return lines


def markdown(result: dict) -> str:
    """The results as markdown: one table per comparison (only those that ran)."""
    lines = _header(result)
    if result.get("complete") is False:
        lines.append("- **incomplete**: the run stopped before its end; the comparisons below are those it finished")
    lines += side_by_side(result)
    for c in result["comparisons"]:
        lines += _table(c)
    if result.get("parity"):
        lines += ["", "## Peers: checked against our plans", "",
                  "A peer on our plans (decord-opencv, torchcodec): its first clip against the reference "
                  "executor's render of the same plan (uint8). MMAction2's own pipeline (val/test views): its "
                  "frame indices and crop boxes for a video against our plan's, and its pixels against the "
                  "reference executor's render of that plan; on the train view its draws are its own (shape only). "
                  "Last column: the same peer output against each executor measured, in grey levels (auto's "
                  "fidelity: within 2 of MMAction2's own output on the test view; on the train view decord-opencv "
                  "is MMAction2's decode and cv2 resize on our plan).",
                  "", "| peer | comparison | compared | same shape | frames equal | boxes equal | mean abs diff "
                  "| max abs diff | each executor measured: max (mean) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in result["parity"]:
            lines.append(f"| {p['peer']} | {p['comparison']} | {p.get('compared', 'pixels on our plan')} | "
                         f"{p['same_shape']} | {_yes(p.get('same_frames'))} | {_yes(p.get('same_boxes'))} | "
                         f"{_level(p, 'mean_abs_diff', '.2f')} | {_level(p, 'max_abs_diff', '.0f')} | "
                         f"{_each(p.get('executors'))} |")
        adapted = {p["peer"] + " " + p["view"]: p["adapted"] for p in result["parity"] if p.get("adapted")}
        for k, v in adapted.items():
            lines.append(f"- {k}: MMAction2's config adapted to the recipe: "
                         + ", ".join(f"{what} {change}" for what, change in v.items()))
    lines += _headline_lines(result["headline"])
    lines += ["", "frames fed/clip: counted from what the DALI executors feed their decoder (the packets of each "
              "clip's GOP slices, or up to the last wanted frame of a whole file), or the frames decoded outside "
              "DALI (frames path, the reference executor). decord est./clip: what a seeking decoder (decord) "
              "decodes from the keyframe before each wanted frame (`tsn_dali.bench.frames_decoded`).", ""]
    return "\n".join(lines)


def _each(diffs: Optional[dict]) -> str:
    if not diffs:
        return "-"
    return ", ".join(f"{k} {v['max']:.0f} ({v['mean']:.2f})" if v else f"{k} other shape" for k, v in diffs.items())


def _level(p: dict, key: str, fmt: str) -> str:
    return format(p[key], fmt) if key in p else "-"


def _yes(value) -> str:
    return "-" if value is None else ("yes" if value else "**NO**")


AUTO_TARGETS = (("mmaction2", 1.3), ("decord-opencv", 1.0), ("torchcodec", 1.0))  # issue 32's targets for auto


def _cell(r: Optional[dict]) -> str:
    if r is None:
        return "-"
    s = r["clips_per_s"]
    mark = " *" if r.get("verdict", "").endswith("beyond spread") else ""
    ratio = f"{r['ratio']:.2f}{mark} " if "ratio" in r else ""
    return f"{ratio}({_num(s['median'])}; {_num(s['min'])}–{_num(s['max'])})"


def auto_targets(c: dict) -> Optional[str]:
    """Whether ``auto`` meets its targets in a comparison (its median over each peer's:
    >= 1.3x MMAction2's own pipeline, >= 1.0x decord-opencv and torchcodec); None where auto
    or every peer is missing."""
    auto = _row(c, "auto")
    if auto is None:
        return None
    parts, met = [], True
    for peer, target in AUTO_TARGETS:
        r = _row(c, peer)
        if r is None:
            continue
        ratio = auto["clips_per_s"]["median"] / r["clips_per_s"]["median"]
        met &= ratio >= target
        parts.append(f"{ratio:.2f}x {peer}" + ("" if ratio >= target else f" (**below {target:g}**)"))
    return ("met: " if met else "NOT met: ") + ", ".join(parts) if parts else None


def side_by_side(result: dict) -> list:
    """One table of every loader comparison (rows) by system (columns): ratio of medians to
    the comparison's baseline, ``*`` beyond the spread, (median clips/s; min–max), and where
    ``auto`` and the peers ran, whether auto meets its targets."""
    comps = [c for c in result["comparisons"] if c["part"] in ("loader", "gop") and c["rows"]]
    if len(comps) < 2 and not any(_row(c, "auto") for c in comps):
        return []
    systems: list = []
    for c in comps:
        systems += [r["system"] for r in c["rows"] if r["system"] not in systems]
    targets = [auto_targets(c) for c in comps]
    head = ["case / view"] + systems + (["auto's targets"] if any(targets) else [])
    base = comps[0]["baseline"]
    lines = ["", "## Side by side", "",
             f"Each row one interleaved comparison; cells: ratio of medians to {base} (`*`: beyond the spread), "
             "(median clips/s; min–max over the rounds). auto's targets: its median over MMAction2's own "
             "pipeline >= 1.3, over decord-opencv and torchcodec >= 1.0.", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for c, target in zip(comps, targets):
        cells = [c["title"]] + [_cell(_row(c, name)) for name in systems] + ([target or "-"] if any(targets) else [])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _headline_lines(h: dict) -> list:
    lines = ["", "## Headline ratios (of medians, each within one comparison)", ""]
    for group, what in (("loader_vs_baseline", "loader"), ("gop_vs_baseline", "loader")):
        for k, v in h[group].items():
            lines.append(f"- {what} {k} / {v['baseline']}: {v['ratio']:.2f}x ({v['verdict']})")
    for k, v in h["sliced_vs_whole"].items():
        lines.append(f"- {k}: GOP slices / whole files: {v:.2f}x")
    for k, v in h["end_to_end_vs_model"].items():
        lines.append(f"- end to end with {k} / model only: {100 * v['ratio']:.0f}% ({v['verdict']})")
    if len(lines) == 3:
        lines.append("- none: a single system was measured")
    return lines


def chart(result: dict, path: str) -> str:
    """One bar chart per comparison (matplotlib Agg): bars are medians, whiskers min/max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [c for c in result["comparisons"] if c["rows"]]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4.8), squeeze=False)
    for ax, c in zip(axes[0], panels):
        items = [(r["system"], r["clips_per_s"]) for r in c["rows"]]
        ax.set_title(c["title"], fontsize=10)
        ax.set_ylabel("clips/s")
        med = [s["median"] for _, s in items]
        err = [[m - s["min"] for m, (_, s) in zip(med, items)], [s["max"] - m for m, (_, s) in zip(med, items)]]
        ax.bar(range(len(items)), med, yerr=err, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([label for label, _ in items], rotation=35, ha="right", fontsize=7)
    if not panels:
        axes[0][0].text(0.5, 0.5, "nothing measured", ha="center", va="center", transform=axes[0][0].transAxes)
    env, cfg = result["env"], result["config"]
    fig.suptitle(f"{Path(cfg['recipe']).name}: {cfg['backbone']}, {cfg['num_segments']} seg, "
                 f"{cfg['input_size']} px, batch {cfg['batch_size']} on {env['device']} "
                 f"({env['date'][:10]}); interleaved, {cfg['rounds']} rounds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(result: dict, out_dir: str, with_chart: bool = True) -> Dict[str, str]:
    """results.json, results.md and (``with_chart``) throughput.png in ``out_dir``; each text
    file is replaced whole (written beside, then renamed), so that a run killed while
    writing keeps the previous version."""
    os.makedirs(out_dir, exist_ok=True)
    files = {"json": os.path.join(out_dir, "results.json"), "markdown": os.path.join(out_dir, "results.md")}
    for name, text in (("json", json.dumps(result, indent=1)), ("markdown", markdown(result))):
        with open(files[name] + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(files[name] + ".tmp", files[name])
    if with_chart:
        files["png"] = chart(result, os.path.join(out_dir, "throughput.png"))
    return files


__all__ = ["AUTO_TARGETS", "auto_targets", "chart", "headline", "log", "markdown", "side_by_side", "write_outputs"]
