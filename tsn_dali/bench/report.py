"""The benchmark's outputs: headline ratios, markdown tables, a bar chart, the JSON."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional


def _median(entries, **match) -> Optional[float]:
    for e in entries:
        if all(e.get(k) == v for k, v in match.items()) and "clips_per_s" in e:
            return e["clips_per_s"]["median"]
    return None


def headline(result: dict) -> dict:
    """Ratios of medians: each DALI variant's loader vs the reference loader (train and test
    views, and per GOP), sliced vs whole-file per GOP, and end to end vs model only (eager)."""
    out = {"loader_vs_reference": {}, "end_to_end_vs_model": {}, "gop_vs_reference": {},
           "sliced_vs_whole": {}}
    for view in ("train", "test"):
        ref = _median(result["loader"], executor="reference", view=view)
        for e in result["loader"]:
            fast = _median([e], view=view)
            if ref and fast and e["executor"] != "reference":
                out["loader_vs_reference"][f"{e['executor']} {view}"] = fast / ref
    for e in result["gop"]:
        gop, name = e["gop"], e["executor"]
        ref = _median(result["gop"], executor="reference", gop=gop)
        mine = _median([e])
        if ref and mine and name != "reference":
            out["gop_vs_reference"][f"{name} GOP {gop}"] = mine / ref
        whole = _median(result["gop"], executor=f"{name}+whole", gop=gop)
        if whole and mine and "+" not in name and name != "reference":
            out["sliced_vs_whole"][f"{name} GOP {gop}"] = mine / whole
    model = _median(result["model"], variant="eager")
    for e in result["end_to_end"]:
        if model and "clips_per_s" in e:
            out["end_to_end_vs_model"][e["executor"]] = e["clips_per_s"]["median"] / model
    return out


def _fmt(stats: Optional[dict]) -> str:
    """``median (min–max)`` with three significant digits."""
    if not stats:
        return "n/a"
    return f"{stats['median']:.3g} ({stats['min']:.3g}–{stats['max']:.3g})"


def _rate(e: dict) -> str:
    return _fmt(e.get("clips_per_s")) if "error" not in e else "failed: " + e["error"]


def _frames(e: dict) -> str:
    if "frames_decoded_per_clip" not in e:
        return "n/a"
    return f"{e['frames_decoded_per_clip']:.1f}" + ("" if e.get("frames_decoded_counted") else " (est.)")


def _bytes(e: dict) -> str:
    return f"{e['bytes_per_clip'] / 1024:.0f} KiB" if "bytes_per_clip" in e else "n/a"


def _nvdec(e: dict) -> str:
    u = e.get("nvdec_utilisation")
    return f"{u['mean']:.0f}% (max {u['max']:.0f}%)" if u else "n/a"


def _header(result: dict) -> list:
    env, cfg = result["env"], result["config"]
    kinds = ", ".join(sorted({"{codec} {width}x{height}".format(**v) for v in result["videos"]}))
    lines = [
        f"# Throughput: {Path(cfg['recipe']).name} on {env['device']}",
        "",
        f"- date: {env['date']}",
        f"- device: {env['device']} ({env['device_type']}); CPUs: {env['cpu_count']} "
        f"({env['cpus_usable']} usable), load average at start {env['load_average_at_start']}",
        f"- versions: torch {env['torch']}, DALI {env['dali']}, timm {env['timm']}, "
        f"torchvision {env['torchvision']}, PyAV {env['pyav']}, decord {env['decord']}, Python {env['python']}",
        f"- command: `{env['command']}`",
        f"- model: {cfg['backbone']}, {cfg['num_segments']} segments, {cfg['input_size']} px, "
        f"batch {cfg['batch_size']} (test view batch {cfg['test_batch_size']}), AMP {cfg['amp']}, "
        f"loader dtype {cfg['dtype']}, channels_last",
        f"- timing: {cfg['warmup']} warm-up batches excluded, {cfg['repeats']} windows of "
        f"{cfg['iters']} batches; figures are clips/s, median (min–max) over the windows",
        f"- videos: {len(result['videos'])} ({kinds}); reference workers {cfg['reference_workers']}, "
        f"DALI threads {cfg['num_threads']}, decode workers {cfg['decode_workers']}, NVDEC sessions "
        f"{cfg['decode_sessions']}, prefetch {cfg['prefetch']}",
    ]
    for name, why in result["unavailable"].items():
        lines.append(f"- {name}: not measured ({why})")
    if cfg.get("note"):
        lines.append(f"- note: {cfg['note']}")
    return lines


def markdown(result: dict) -> str:
    """The results as markdown tables (median, min–max over the repeats)."""
    lines = _header(result)
    lines += ["", "## Loader only", "",
              "| executor | view | batch | views/clip | frames sampled/clip | frames decoded/clip | "
              "bytes fed/clip | NVDEC busy | clips/s |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in result["loader"]:
        lines.append(f"| {e['executor']} | {e['view']} | {e['batch_size']} | {e['views_per_clip']} | "
                     f"{e['frames_sampled_per_clip']:.1f} | {_frames(e)} | {_bytes(e)} | {_nvdec(e)} | {_rate(e)} |")
    lines += ["", "## Model only (the trainer's step, tsn_dali.engine.step, on synthetic input)", "",
              "| variant | batch | views/clip | clips/s |", "| --- | --- | --- | --- |"]
    for e in result["model"]:
        lines.append(f"| {e['variant']} | {e['batch_size']} | {e['views_per_clip']} | {_rate(e)} |")
    lines += ["", "## End to end (each executor feeding that step)", "",
              "| executor | batch | clips/s | share of time blocked waiting for data |", "| --- | --- | --- | --- |"]
    for e in result["end_to_end"]:
        if "error" in e:
            lines.append(f"| {e['executor']} | {e['batch_size']} | failed: {e['error']} | |")
            continue
        w = e["data_wait_share"]
        lines.append(f"| {e['executor']} | {e['batch_size']} | {_fmt(e['clips_per_s'])} | "
                     f"{100 * w['median']:.0f}% ({100 * w['min']:.0f}–{100 * w['max']:.0f}%) |")
    if result["gop"]:
        codec = result["config"].get("gop_codec", "")
        lines += ["", f"## Decode cost vs GOP ({codec}, train view, loader only)", "",
                  "| GOP | keyframe every (mean) | file KiB | executor | frames decoded/clip | bytes fed/clip | "
                  "NVDEC busy | clips/s |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in result["gop"]:
        lines.append(f"| {e['gop']} | {e['keyframe_interval']:.1f} | {e['file_bytes'] / 1024:.0f} | {e['executor']} | "
                     f"{_frames(e)} | {_bytes(e)} | {_nvdec(e)} | {_rate(e)} |")
    lines += _headline_lines(result["headline"])
    lines += ["", "frames decoded/clip: counted from what the DALI executors feed their decoder (the "
              "packets of each clip's GOP slices, or up to the last wanted frame of a whole file); "
              "(est.): the reference executor's decord, estimated by `tsn_dali.bench.frames_decoded` "
              "(from the keyframe before each wanted frame). bytes fed/clip: what the decoder got.", ""]
    return "\n".join(lines)


def _headline_lines(h: dict) -> list:
    lines = ["", "## Headline ratios (of medians)", ""]
    for k, v in h["loader_vs_reference"].items():
        lines.append(f"- loader {k} / reference: {v:.2f}x")
    for k, v in h["gop_vs_reference"].items():
        lines.append(f"- loader {k} / reference: {v:.2f}x")
    for k, v in h["sliced_vs_whole"].items():
        lines.append(f"- {k}: GOP slices / whole files: {v:.2f}x")
    for k, v in h["end_to_end_vs_model"].items():
        lines.append(f"- end to end with {k} / model only: {100 * v:.0f}%")
    if not h["loader_vs_reference"] and not h["gop_vs_reference"]:
        lines.append("- loader DALI / reference: n/a (no DALI executor measured)")
    return lines


def chart(result: dict, path: str) -> str:
    """Bar chart (matplotlib Agg): loader, model vs end to end, GOP; bars are medians,
    whiskers min/max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("Loader only, train view", [(e["executor"], e) for e in result["loader"] if e["view"] == "train"]),
        ("Loader only, test view", [(e["executor"], e) for e in result["loader"] if e["view"] == "test"]),
        ("Training: model only vs end to end",
         [(f"model ({e['variant']})", e) for e in result["model"]] +
         [(f"e2e {e['executor']}", e) for e in result["end_to_end"]]),
        ("Loader vs GOP (train view)", [(f"{e['executor']} GOP {e['gop']}", e) for e in result["gop"]]),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    for ax, (title, items) in zip(axes, panels):
        items = [(label, e["clips_per_s"]) for label, e in items if "clips_per_s" in e]
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("clips/s")
        if not items:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            continue
        med = [s["median"] for _, s in items]
        err = [[m - s["min"] for m, (_, s) in zip(med, items)], [s["max"] - m for m, (_, s) in zip(med, items)]]
        ax.bar(range(len(items)), med, yerr=err, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([label for label, _ in items], rotation=35, ha="right", fontsize=7)
    env, cfg = result["env"], result["config"]
    fig.suptitle(f"{Path(cfg['recipe']).name}: {cfg['backbone']}, {cfg['num_segments']} seg, "
                 f"{cfg['input_size']} px, batch {cfg['batch_size']} on {env['device']} "
                 f"({env['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(result: dict, out_dir: str) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    files = {"json": os.path.join(out_dir, "results.json"), "markdown": os.path.join(out_dir, "results.md"),
             "png": os.path.join(out_dir, "throughput.png")}
    with open(files["json"], "w") as fh:
        json.dump(result, fh, indent=1)
    with open(files["markdown"], "w") as fh:
        fh.write(markdown(result))
    chart(result, files["png"])
    return files


__all__ = ["chart", "headline", "markdown", "write_outputs"]
