"""From the official annotations to MMAction2's lists: ``python -m tsn_dali.prepare lists``.

    python -m tsn_dali.prepare lists kinetics400 --root data/kinetics400 [--gop 16 --short-side 256]
    python -m tsn_dali.prepare lists sthv2 --root data/sthv2

Kinetics (400, 600, 700), as MMAction2's tools/data (``download.py``, ``parse_file_list.py``):

- annotations: ``<root>/annotations/kinetics_{train,val,test}.csv`` (MMAction2's names) or
  DeepMind's ``train.csv``, ``validate.csv``, ``test.csv``; columns ``label, youtube_id,
  time_start, time_end, split`` (read by name; a test file without ``label`` is skipped).
- videos: ``<root>/videos_{train,val,test}/``, each clip named as the download scripts name
  it, ``{youtube_id}_{int(time_start):06d}_{int(time_end):06d}.mp4``, either in one folder
  per class (level 2, the class name with spaces as ``_``, as after MMAction2's
  ``rename_classnames.sh``: a list line cannot hold a space, so folders still spelled with
  spaces are reported, not listed) or all in one folder (level 1). ``--level auto`` takes
  the layout that finds more videos.
- labels: class i is the i-th of the train CSV's class names, each with ``"`` removed and
  spaces as ``_``, sorted; the label map lists the names as the CSV spells them (spaces),
  in that order (``label_map_k400.txt``).

Something-Something V2, as MMAction2's ``parse_sthv2_splits``:

- annotations: ``<root>/annotations/something-something-v2-{train,validation,labels}.json``
  (or ``train.json``, ``validation.json``, ``labels.json``); videos ``<root>/videos/{id}.webm``.
- labels: the labels JSON maps each template to its class number; an item's class is its
  ``template`` with ``[`` and ``]`` removed. The label map lists the templates by class
  number (``label_map_sthv2.txt``).

Writes ``<root>/<dataset>_{train,val}_list_videos.txt`` (``path label`` a line, paths
relative to the split's video folder: the recipes' ``data.*_list`` / ``*_prefix``) and the
label map. A video that is not there, or that the index cannot use (``--check probe``,
the default: probed once and written to the index cache training reads), is left out of
the list and written to ``<root>/<dataset>_lists_report.txt`` (``split kind: file:line:
path: reason``) with counts per split in the summary line. ``--gop N`` then re-encodes each
new list as ``python -m tsn_dali.prepare`` does, into ``<video folder>_gop<N>[_short<S>]``.

Exit status 0 when the lists are written (missing and unreadable videos are reported),
1 for an annotation or usage error (one line naming the file and line), or when a
re-encode failed.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from tsn_dali import cli
from tsn_dali.engine.errors import UsageError
from tsn_dali.data.index.annotations import AnnotationError

KINETICS = {"kinetics400": "k400", "kinetics600": "k600", "kinetics700": "k700"}
DATASETS = (*KINETICS, "sthv2")
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".flv")  # preference order
KINETICS_FILES = {"train": ("kinetics_train.csv", "train.csv"),
                  "val": ("kinetics_val.csv", "validate.csv", "val.csv"),
                  "test": ("kinetics_test.csv", "test.csv")}
STHV2_FILES = {"train": ("something-something-v2-train.json", "train.json"),
               "val": ("something-something-v2-validation.json", "validation.json"),
               "labels": ("something-something-v2-labels.json", "labels.json")}
KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")


@dataclass
class Entry:
    """One annotated video: where it should be, its class, and where it was annotated."""

    keys: Dict[int, str]  # level -> expected relative path without extension
    label: int
    where: str  # "file.csv:LINE" or "file.json: item N"
    problem: Optional[str] = None  # e.g. an unknown class: the entry is reported, not listed


# --------------------------------------------------------------------------- Kinetics


def convert_label(name: str) -> str:
    """MMAction2 ``parse_kinetics_splits``: ``"`` removed, spaces as ``_``."""
    return name.replace('"', "").replace(" ", "_")


def kinetics_clip_name(youtube_id: str, time_start: str, time_end: str) -> str:
    """``{youtube_id}_{int(float(start)):06d}_{int(float(end)):06d}`` (the download scripts' name)."""
    return f"{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}"


def read_kinetics_csv(file: str) -> Tuple[List[Tuple[int, dict]], bool]:
    """([(line, row)], has_labels); a missing column or a bad time raises AnnotationError."""
    with open(file, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        lacking = [c for c in KINETICS_COLUMNS if c not in header]
        if lacking:
            raise AnnotationError(file, 1, f"expected columns label, youtube_id, time_start, time_end, "
                                  f"split; {', '.join(lacking)} missing (header: {','.join(header)})")
        rows = []
        for row in reader:
            line = reader.line_num
            if not any((v or "").strip() for v in row.values()):
                continue
            for key in ("time_start", "time_end"):
                try:
                    float(row[key])
                except (TypeError, ValueError):
                    raise AnnotationError(file, line, f"{key}: expected seconds, got {row[key]!r}") from None
            if not (row["youtube_id"] or "").strip():
                raise AnnotationError(file, line, "youtube_id: expected an id, got nothing")
            if "label" in header and not (row["label"] or "").strip():
                raise AnnotationError(file, line, "label: expected a class name, got nothing")
            rows.append((line, row))
    return rows, "label" in header


def kinetics_classes(train_rows: List[Tuple[int, dict]]) -> List[str]:
    """Class names as the CSV spells them (``"`` removed), ordered by their converted
    names, sorted (MMAction2: ``sorted(set(convert_label(label)))``)."""
    names = {}
    for _, row in train_rows:
        names.setdefault(convert_label(row["label"].strip()), row["label"].strip().replace('"', ""))
    return [names[key] for key in sorted(names)]


def kinetics_entries(rows, classes: List[str], file: str) -> List[Entry]:
    index = {convert_label(name): i for i, name in enumerate(classes)}
    out = []
    for line, row in rows:
        name = kinetics_clip_name(row["youtube_id"].strip(), row["time_start"], row["time_end"])
        label = convert_label(row["label"].strip())
        entry = Entry({1: name, 2: f"{label}/{name}"}, index.get(label, -1), f"{file}:{line}")
        if label not in index:
            entry.problem = f"class {row['label'].strip()!r} is not among the train CSV's classes"
        out.append(entry)
    return out


# --------------------------------------------------------------------------- Something-Something V2


def _read_json(file: str):
    try:
        with open(file, encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as exc:
        raise AnnotationError(file, getattr(exc, "lineno", None), f"expected JSON ({exc})") from None


def sthv2_templates(file: str) -> List[str]:
    """Class names by number from the labels JSON (``{template: "number"}``)."""
    data = _read_json(file)
    if not isinstance(data, dict) or not data:
        raise AnnotationError(file, None, "expected an object mapping each template to its class number")
    by_number = {}
    for template, number in data.items():
        try:
            by_number[int(number)] = template
        except (TypeError, ValueError):
            raise AnnotationError(file, None, f"{template!r}: expected a class number, got {number!r}") from None
    if sorted(by_number) != list(range(len(by_number))):
        raise AnnotationError(file, None, f"expected class numbers 0..{len(data) - 1}, each once")
    return [by_number[i] for i in range(len(by_number))]


def sthv2_entries(file: str, templates: List[str]) -> List[Entry]:
    """One entry per item (``id``, ``template``); the class of ``template`` without brackets."""
    data = _read_json(file)
    if not isinstance(data, list):
        raise AnnotationError(file, None, "expected a list of {id, label, template, placeholders} items")
    index = {t: i for i, t in enumerate(templates)}
    out = []
    for number, item in enumerate(data, start=1):
        if not isinstance(item, dict) or not str(item.get("id", "")).strip():
            raise AnnotationError(file, None, f"item {number}: expected an object with an id")
        if "template" not in item:
            raise AnnotationError(file, None, f"item {number} (id {item['id']}): expected a template "
                                  "(a test file has no labels: list only train and validation)")
        template = str(item["template"]).replace("[", "").replace("]", "")
        vid = str(item["id"]).strip()
        entry = Entry({1: vid}, index.get(template, -1), f"{file}: item {number}")
        if template not in index:
            entry.problem = f"template {template!r} is not in the labels file"
        out.append(entry)
    return out


# --------------------------------------------------------------------------- finding the videos


def scan_videos(folder: str, level: int, spaced: Optional[set] = None) -> Dict[str, str]:
    """{key: relative path} of the video files in ``folder`` (level 1, key the stem) or in
    its sub-folders (level 2, key ``folder/stem``); the first of VIDEO_EXTS wins a tie.
    Names with whitespace (a list line cannot hold them) are left out and added to ``spaced``."""
    found: Dict[str, Tuple[int, str]] = {}
    spaced = set() if spaced is None else spaced

    def add(rel, ext):
        if any(ch.isspace() for ch in rel):
            spaced.add(rel.split("/")[0] if "/" in rel else rel)
            return
        rank = VIDEO_EXTS.index(ext)
        key = os.path.splitext(rel)[0]
        if key not in found or rank < found[key][0]:
            found[key] = (rank, rel)

    try:
        top = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return {}
    for entry in top:
        if level == 1 and entry.is_file():
            ext = os.path.splitext(entry.name)[1].lower()
            if ext in VIDEO_EXTS:
                add(entry.name, ext)
        elif level == 2 and entry.is_dir():
            for sub in os.scandir(entry.path):
                ext = os.path.splitext(sub.name)[1].lower()
                if sub.is_file() and ext in VIDEO_EXTS:
                    add(f"{entry.name}/{sub.name}", ext)
    return {key: rel for key, (_, rel) in found.items()}


def match_videos(entries: List[Entry], folder: str, level, spaced: Optional[set] = None
                 ) -> Tuple[int, List[Tuple[Entry, Optional[str]]]]:
    """(level used, [(entry, relative path or None)]); ``level`` 'auto' takes the layout
    that finds more of the entries (a tie: the deeper one, MMAction2's default 2)."""
    levels = sorted({lv for e in entries for lv in e.keys}) or [1]
    if level != "auto":
        levels = [int(level)]
    scans = {lv: scan_videos(folder, lv, spaced) for lv in levels}
    best = max(levels, key=lambda lv: (sum(e.keys.get(lv) in scans[lv] for e in entries), lv))
    return best, [(e, scans[best].get(e.keys.get(best, e.keys[min(e.keys)]))) for e in entries]


# --------------------------------------------------------------------------- the command


def _first_file(folder: str, names: Sequence[str]) -> Optional[str]:
    for name in names:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _write_text(file: str, lines: List[str]) -> None:
    tmp = file + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    os.replace(tmp, file)


def read_annotations(dataset: str, annotations: str, splits: Sequence[str], files: Dict[str, str]
                     ) -> Tuple[List[str], Dict[str, List[Entry]], List[str]]:
    """(class names, entries by split, notes) from the official files."""
    notes: List[str] = []
    table = STHV2_FILES if dataset == "sthv2" else KINETICS_FILES

    def locate(split):
        file = files.get(split) or _first_file(annotations, table[split])
        if file is None:
            raise AnnotationError(annotations, None, f"no {split} annotations: expected one of "
                                  f"{', '.join(table[split])} (or --{split}-annotations FILE)")
        return file

    entries: Dict[str, List[Entry]] = {}
    if dataset == "sthv2":
        classes = sthv2_templates(locate("labels"))
        for split in splits:
            entries[split] = sthv2_entries(locate(split), classes)
        return classes, entries, notes
    train_rows, has_labels = read_kinetics_csv(locate("train"))
    if not has_labels:
        raise AnnotationError(locate("train"), 1, "expected a label column in the train CSV")
    classes = kinetics_classes(train_rows)
    for split in splits:
        rows, labelled = (train_rows, True) if split == "train" else read_kinetics_csv(locate(split))
        if not labelled:
            notes.append(f"{split}: {locate(split)} has no label column; no list written")
            continue
        entries[split] = kinetics_entries(rows, classes, locate(split))
    return classes, entries, notes


def check_videos(paths: List[str], mode: str, index_cache: Optional[str], workers, progress) -> Dict[str, str]:
    """{path: reason} of the videos the index cannot use (``mode`` 'probe'), or {} ('exists')."""
    if mode != "probe" or not paths:
        return {}
    from tsn_dali.data.index.build import build_index

    index = build_index(paths, cache_dir=index_cache, workers=workers, progress=progress)
    return {info.path: info.error or "no frames" for info in index.bad}


def default_video_dir(dataset: str, root: str, split: str) -> str:
    return os.path.join(root, "videos") if dataset == "sthv2" else os.path.join(root, f"videos_{split}")


def label_map_name(dataset: str) -> str:
    return f"label_map_{KINETICS.get(dataset, dataset)}.txt"


def prepare_lists(dataset: str, root: str, *, annotations: Optional[str] = None,
                  splits: Sequence[str] = ("train", "val"), files: Optional[Dict[str, str]] = None,
                  video_dirs: Optional[Dict[str, str]] = None, level="auto", check: str = "probe",
                  index_cache: Optional[str] = None, workers: Optional[int] = None,
                  progress: bool = True) -> dict:
    """Write the lists, the label map and the report (module docstring); returns a summary:
    ``{"splits": {split: {"list", "video_dir", "level", "listed", "missing", "unreadable",
    "unknown_class"}}, "label_map", "report", "notes"}``."""
    annotations = annotations or os.path.join(root, "annotations")
    classes, entries, notes = read_annotations(dataset, annotations, splits, files or {})
    summary = {"splits": {}, "notes": notes}
    matched = {}
    for split, items in entries.items():
        folder = (video_dirs or {}).get(split) or default_video_dir(dataset, root, split)
        spaced: set = set()
        used, pairs = match_videos(items, folder, level if dataset != "sthv2" else 1, spaced)
        matched[split] = (folder, used, pairs)
        if spaced:
            notes.append(f"{split}: {len(spaced)} name(s) in {folder} hold spaces, which a list line "
                         f"cannot (e.g. {sorted(spaced)[0]!r}): rename them with _ for spaces, as "
                         "MMAction2's rename_classnames.sh does")
    paths = sorted({os.path.join(folder, rel) for folder, _, pairs in matched.values()
                    for e, rel in pairs if rel and not e.problem})
    if index_cache is None:  # the cache the recipes read when root is <data.root>/<dataset>
        index_cache = os.path.join(os.path.dirname(os.path.abspath(root)), ".tsn_dali_index")
    unreadable = check_videos(paths, check, index_cache, workers, progress)
    expected_ext = ".webm" if dataset == "sthv2" else ".mp4"
    report = []
    os.makedirs(root, exist_ok=True)
    for split, (folder, used, pairs) in matched.items():
        counts = {"listed": 0, "missing": 0, "unreadable": 0, "unknown_class": 0}
        lines = []
        for entry, rel in pairs:
            path = os.path.join(folder, rel) if rel else os.path.join(folder, entry.keys[used] + expected_ext)
            if entry.problem:
                kind, reason = "unknown_class", entry.problem
            elif rel is None:
                kind, reason = "missing", "not found"
            elif path in unreadable:
                kind, reason = "unreadable", unreadable[path]
            else:
                counts["listed"] += 1
                lines.append(f"{rel} {entry.label}\n")
                continue
            counts[kind] += 1
            report.append(f"{split} {kind}: {entry.where}: {path}: {reason}\n")
        list_file = os.path.join(root, f"{dataset}_{split}_list_videos.txt")
        _write_text(list_file, lines)
        summary["splits"][split] = {"list": list_file, "video_dir": folder, "level": used, **counts}
    label_map = os.path.join(root, label_map_name(dataset))
    _write_text(label_map, [f"{name}\n" for name in classes])
    report_file = os.path.join(root, f"{dataset}_lists_report.txt")
    head = [f"# python -m tsn_dali.prepare lists {dataset}: {summary_line(dataset, summary)}\n"]
    _write_text(report_file, head + [f"# {n}\n" for n in notes] + report)
    summary.update(label_map=label_map, report=report_file, index_cache=index_cache if check == "probe" else None)
    return summary


def summary_line(dataset: str, summary: dict) -> str:
    parts = [f"{split} {s['listed']} listed, {s['missing']} missing, {s['unreadable']} unreadable"
             + (f", {s['unknown_class']} of unknown class" if s["unknown_class"] else "")
             for split, s in summary["splits"].items()]
    return "; ".join(parts) or "no split listed"


def reencode(summary: dict, gop: int, short_side: Optional[int], crf: Optional[int], workers: int,
             progress: bool) -> List[dict]:
    """Each new list re-encoded as ``python -m tsn_dali.prepare`` does (short GOP, short side)."""
    from tsn_dali.prepare.videos import prepare

    out = []
    for split, s in summary["splits"].items():
        suffix = f"_gop{gop}" + (f"_short{short_side}" if short_side else "")
        done = prepare(s["list"], s["video_dir"], s["video_dir"].rstrip(os.sep) + suffix, gop=gop,
                       short_side=short_side, crf=crf, workers=workers, progress=progress)
        out.append({"split": split, **done})
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m tsn_dali.prepare lists",
                                description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--root", help="the data set's folder (default data/<dataset>): lists are written here")
    p.add_argument("--annotations", help="folder of the official files (default <root>/annotations)")
    p.add_argument("--splits", default="train,val", help="comma-separated: train, val, test (Kinetics)")
    for split in ("train", "val", "test", "labels"):
        p.add_argument(f"--{split}-annotations", help=f"the {split} file itself")
    for split in ("train", "val", "test"):
        p.add_argument(f"--{split}-videos", help=f"the {split} videos' folder "
                       "(default <root>/videos_<split>; sthv2: <root>/videos)")
    p.add_argument("--level", choices=("auto", "1", "2"), default="auto",
                   help="Kinetics: 2 = a folder per class, 1 = one folder (default: whichever finds more)")
    p.add_argument("--check", choices=("probe", "exists"), default="probe",
                   help="probe: leave out videos the index cannot use (default); exists: only missing ones")
    p.add_argument("--index-cache", help="where probes are cached (default <root>/../.tsn_dali_index, "
                   "the recipes' cache when --root is <data.root>/<dataset>)")
    p.add_argument("--workers", type=int, help="probe threads and encode jobs (default: the CPU count)")
    p.add_argument("--gop", type=int, help="then re-encode every listed video with a keyframe every N frames")
    p.add_argument("--short-side", type=int, help="with --gop: resize to this short side")
    p.add_argument("--crf", type=int, help="with --gop: x264 quality")
    p.add_argument("--no-progress", action="store_true")
    return p


def _usage_error(args) -> Optional[str]:
    splits = [s for s in args.splits.split(",") if s]
    if not splits or any(s not in KINETICS_FILES for s in splits) or len(set(splits)) != len(splits):
        return f"--splits {args.splits}: expected a comma-separated subset of train, val, test"
    if args.dataset == "sthv2" and "test" in splits:
        return "--splits: Something-Something V2's test file has no labels; expected train and/or val"
    if args.gop is not None and args.gop < 1:
        return "--gop: expected a positive number of frames"
    if (args.short_side is not None or args.crf is not None) and args.gop is None:
        return "--short-side and --crf re-encode: give --gop too"
    if args.short_side is not None and args.short_side < 2:
        return "--short-side: expected at least 2"
    if args.workers is not None and args.workers < 1:
        return "--workers: expected at least 1"
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_main(lambda: lists_cli(args), more_errors=(OSError,))


def lists_cli(args) -> int:
    """``prepare_lists`` (and the chained re-encode) as the command line says."""
    problem = _usage_error(args)
    if problem:
        raise UsageError(problem)
    root = args.root or os.path.join("data", args.dataset)
    files = {k: getattr(args, f"{k}_annotations") for k in ("train", "val", "test", "labels")
             if getattr(args, f"{k}_annotations")}
    video_dirs = {k: getattr(args, f"{k}_videos") for k in ("train", "val", "test") if getattr(args, f"{k}_videos")}
    summary = prepare_lists(args.dataset, root, annotations=args.annotations,
                            splits=args.splits.split(","), files=files, video_dirs=video_dirs,
                            level=args.level, check=args.check, index_cache=args.index_cache,
                            workers=args.workers, progress=not args.no_progress)
    print(f"tsn_dali.prepare lists {args.dataset}: {summary_line(args.dataset, summary)}; "
          f"lists and {os.path.basename(summary['label_map'])} in {root}; report: {summary['report']}", flush=True)
    for note in summary["notes"]:
        print(f"  note: {note}", file=sys.stderr)
    if args.gop is None:
        return 0
    done = reencode(summary, args.gop, args.short_side, args.crf, args.workers or os.cpu_count() or 1,
                    not args.no_progress)
    for d in done:
        print(f"  re-encoded {d['split']}: {d['written']} written, {d['skipped']} already there, "
              f"{len(d['failed'])} failed; list: {d['list']}", flush=True)
    return 1 if any(d["failed"] for d in done) else 0
