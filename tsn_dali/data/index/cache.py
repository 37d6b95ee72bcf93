"""The video index cache on disk: ``<cache_dir>/video_index.json`` and its partial files.

The cache is one JSON object::

    {"format": "tsn_dali.video_index", "version": 5, "fields": [VideoInfo field names],
     "videos": [[one value per field], ...]}

one row per video, its ``path`` column the absolute path, checked against the file's
size and mtime (a changed file is probed again). Rows hold every field VideoInfo's
constructor takes (lists included), so a file of another version, or written when
VideoInfo had other fields, is a miss: its videos are probed again. Missing files are
never cached.

Partial progress: while probing, the new rows are written every few seconds to
``<cache_dir>/partial/<run>-<n>.json`` (the same layout). A load reads them with the main
file; the build's final save folds them in and removes them, so a killed build keeps
what it had probed up to its last partial file. Every file is written to a temporary
name and renamed, so no reader sees half a file. The build itself (one process, or
every torchrun rank) is ``tsn_dali.data.index.build``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tsn_dali.data.index.video_index import CACHE_NAME, VideoInfo

FORMAT = "tsn_dali.video_index"
FORMAT_VERSION = 5  # bump when the probe's rules change what a field means (5: stream choice, rotation)
PARTIAL_DIR = "partial"
MISSING = "file not found"  # probe_video's error for a missing file: never cached


def index_cache_dir(recipe) -> str:
    """A recipe's cache folder: ``data.index_cache`` (under ``data.root`` unless absolute),
    default ``<data.root>/.tsn_dali_index``."""
    from tsn_dali.config import resolve_data_path

    data = recipe.data
    return resolve_data_path(recipe, data.index_cache) if data.index_cache else \
        os.path.join(data.root, ".tsn_dali_index")


# --------------------------------------------------------------------------- rows and files


def info_fields() -> List[str]:
    """VideoInfo's dataclass fields (those its constructor takes), in order: the cache's columns."""
    return [f.name for f in dataclasses.fields(VideoInfo) if f.init]


def info_row(info: VideoInfo, fields: Sequence[str], absolute: bool = True) -> list:
    row = [getattr(info, name) for name in fields]
    if absolute:
        row[fields.index("path")] = os.path.abspath(info.path)
    return row


def row_info(row: Sequence, fields: Sequence[str], path: str) -> VideoInfo:
    """The VideoInfo of a row whose columns are ``fields`` (VideoInfo's own, in order)."""
    info = VideoInfo(*row)
    info.path = path
    return info


def read_rows(file: str, fields: Sequence[str]) -> Optional[Tuple[dict, List[list]]]:
    """(header, rows) of a file in the cache layout; None when it is absent, unreadable,
    or of another format, version or field list (an older cache is a miss)."""
    try:
        with open(file, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("format") != FORMAT
            or data.get("version") != FORMAT_VERSION or data.get("fields") != list(fields)):
        return None
    rows = data.pop("videos", None)
    if not isinstance(rows, list):
        return None
    return data, [r for r in rows if isinstance(r, list) and len(r) == len(fields)]


def write_rows(file: str, rows: Iterable[list], fields: Sequence[str], **header) -> None:
    """Write atomically (temp file in the same folder, rename): readers never see half a file."""
    folder = os.path.dirname(file) or "."
    os.makedirs(folder, exist_ok=True)
    text = json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "fields": list(fields),
                       **header, "videos": list(rows)}, separators=(",", ":"))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class IndexCache:
    """``<folder>/video_index.json`` and its partial files: rows by absolute path."""

    def __init__(self, folder):
        self.folder = str(folder)
        self.main = os.path.join(self.folder, CACHE_NAME)
        self.partial_dir = os.path.join(self.folder, PARTIAL_DIR)
        self.fields = info_fields()
        self.rows: Dict[str, list] = {}
        self._partials_read: List[str] = []
        self._stamp = None
        self._col = {name: i for i, name in enumerate(self.fields)}
        self._run = f"{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._seq = 0

    def _main_stamp(self):
        try:
            st = os.stat(self.main)
            return st.st_size, st.st_mtime_ns, st.st_ino
        except OSError:
            return None

    def load(self) -> "IndexCache":
        """Rows of the main file, then of every partial file (later ones win)."""
        self._stamp = self._main_stamp()
        got = read_rows(self.main, self.fields)
        col = self._col["path"]
        self.rows = {r[col]: r for r in got[1]} if got else {}
        self._partials_read = []
        for name in sorted(list_folder(self.partial_dir)):
            if not name.endswith(".json") or name.startswith(".tmp-"):
                continue
            file = os.path.join(self.partial_dir, name)
            part = read_rows(file, self.fields)
            if part is not None:
                self.rows.update((r[col], r) for r in part[1])
                self._partials_read.append(file)
        return self

    def snapshot(self) -> str:
        """Which files the last load read (main file's size, mtime, inode; partial names)."""
        return json.dumps([self._stamp, sorted(os.path.basename(f) for f in self._partials_read)])

    @property
    def has_partials(self) -> bool:
        """Partial files were read at load (a save folds them in)."""
        return bool(self._partials_read)

    def lookup(self, path: str) -> Optional[VideoInfo]:
        """The cached VideoInfo of ``path`` when its size and mtime still match, else None."""
        row = self.rows.get(os.path.abspath(path))
        if row is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        if row[self._col["size"]] != st.st_size or row[self._col["mtime"]] != float(st.st_mtime):
            return None
        return row_info(row, self.fields, path)

    def save_partial(self, infos: Sequence[VideoInfo], tag: str = "") -> None:
        """New rows since the last partial save, as one more partial file."""
        rows = [info_row(i, self.fields) for i in infos if i.error != MISSING]
        if rows:
            self._seq += 1
            write_rows(os.path.join(self.partial_dir, f"{tag}{self._run}-{self._seq:05d}.json"),
                       rows, self.fields)

    def save(self, rows: Iterable[list], remove: Iterable[str] = ()) -> None:
        """Fold ``rows`` (absolute paths) into the main file; remove the partial files read
        at load, this object's own, and ``remove``. A main file rewritten by another
        process since the load is read again first, so its new rows are kept."""
        col = self._col["path"]
        if self._main_stamp() != self._stamp:
            got = read_rows(self.main, self.fields)
            if got:
                fresh = {r[col]: r for r in got[1]}
                fresh.update(self.rows)
                self.rows = fresh
        err = self._col["error"]
        self.rows.update((r[col], r) for r in rows if r[err] != MISSING)
        write_rows(self.main, self.rows.values(), self.fields)
        self._stamp = self._main_stamp()
        own = [os.path.join(self.partial_dir, n) for n in list_folder(self.partial_dir) if self._run in n]
        for file in [*self._partials_read, *own, *remove]:
            try:
                os.unlink(file)
            except OSError:
                pass
        self._partials_read = []
        sweep(self.folder, ".tmp-")
        sweep(self.partial_dir, ".tmp-")


def sweep(folder: str, prefix: str, older_than: float = 24 * 3600.0) -> None:
    """Remove what killed runs left in ``folder``: entries named ``prefix*`` (temp files,
    build folders) untouched for ``older_than`` seconds."""
    now = time.time()
    for name in list_folder(folder):
        path = os.path.join(folder, name)
        try:
            if name.startswith(prefix) and now - os.stat(path).st_mtime > older_than:
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        except OSError:
            pass


def list_folder(folder: str) -> List[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []



def check_cached(paths: Sequence[str], cache: Optional[IndexCache], workers: int = 1
                 ) -> Tuple[Dict[str, VideoInfo], List[str]]:
    """(hits, misses): cache entries whose file still has the size and mtime they record.
    Where the first 512 stat calls average over 50 us (a network file system: they wait,
    they do not compute), the rest run on up to 4 x ``workers`` threads; on a local disk
    threads only add contention for the GIL (4x slower measured on 2 cores)."""
    if cache is None or not cache.rows:
        return {}, list(paths)
    head = min(len(paths), 512)
    start = time.perf_counter()
    found = [cache.lookup(p) for p in paths[:head]]
    slow = (time.perf_counter() - start) / max(1, head) > 50e-6
    rest = paths[head:]
    if slow and workers > 1 and rest:
        chunks = [rest[i:i + 256] for i in range(0, len(rest), 256)]  # one future per chunk
        with ThreadPoolExecutor(min(32, 4 * workers)) as pool:
            for part in pool.map(lambda chunk: [cache.lookup(p) for p in chunk], chunks):
                found += part
    else:
        found += [cache.lookup(p) for p in rest]
    hits = {p: info for p, info in zip(paths, found) if info is not None}
    return hits, [p for p, info in zip(paths, found) if info is None]
