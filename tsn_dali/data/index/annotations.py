"""Annotation lists in MMAction2's formats, read strictly.

- video list (MMAction2 VideoDataset): ``relative/path.mp4 label`` per line, the path
  relative to ``prefix``;
- rawframe list (MMAction2 RawframeDataset): ``frame_dir total_frames label`` per line;
- label map: one class name a line, line ``i`` (0-based) is class ``i``.

Lists are UTF-8 text; a byte-order mark (what some Windows editors write first) is read
past, and a line that is not UTF-8 is one error naming it. Blank lines and surrounding
whitespace are ignored. A malformed line (wrong number of fields, a label that is not an
integer or not below ``num_classes``, a file or folder that does not exist) raises
``AnnotationError("<file>:<line>: <what was expected>")``; with ``skip_bad=True`` the line
is left out and its message returned in ``problems``. ``duplicates(records)`` finds a path
listed twice (the same label: a duplicate line; another label: a conflict).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from tsn_dali.errors import UserError


class AnnotationError(UserError, ValueError):
    """A bad annotation file or line; ``str`` is ``<file>:<line>: <what was expected>``."""

    def __init__(self, file: str, line: Optional[int], message: str):
        self.file, self.line, self.message = str(file), line, message
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {message}")


@dataclass
class VideoRecord:
    """One video of a split: its path and label; where it came from (a list file and line,
    for messages) where it came from one."""

    path: str  # full path: prefix joined with the list's relative path
    label: int
    line: int = 0  # 1-based line in the list file (0: not from a file)
    source: str = ""  # the list file ("" for an in-memory list)
    num_frames: Optional[int] = None  # rawframe lists: total_frames column


def _text_lines(path: str, what: str = "annotation", noun: str = "list"):
    """(line number, text) of each line of a UTF-8 file, a leading byte-order mark read
    past; a missing file, a byte that is not UTF-8 or a NUL is one AnnotationError."""
    if not os.path.isfile(path):
        raise AnnotationError(path, None, f"{what} file not found")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AnnotationError(path, number, f"expected UTF-8 text, got byte 0x{raw[exc.start]:02x} at "
                                      f"column {exc.start + 1} (save the {noun} as UTF-8)") from None
            if "\x00" in text:
                raise AnnotationError(path, number, "expected text, got a NUL byte (a binary file?)")
            yield number, text


def _lines(list_file: str):
    for number, text in _text_lines(list_file):
        text = text.strip()
        if text:
            yield number, text


def duplicates(records: List[VideoRecord]) -> Tuple[List[str], List[str]]:
    """(repeated, conflicting): one message per record whose path an earlier line of the
    same list already gave, ``<file>:<line>: <path> repeats line N`` with the same label,
    ``... line N says label A, this one B`` with another."""
    first: dict = {}
    repeated, conflicting = [], []
    for record in records:
        earlier = first.setdefault(record.path, record)
        if earlier is record:
            continue
        where = f"{record.source}:{record.line}: {record.path}"
        if earlier.label == record.label:
            repeated.append(f"{where} repeats line {earlier.line}")
        else:
            conflicting.append(f"{where}: line {earlier.line} says label {earlier.label}, this one {record.label}")
    return repeated, conflicting


def _int_field(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected an integer {what}, got {value!r}") from None


def _label(value: str, num_classes: Optional[int]) -> int:
    label = _int_field(value, "label")
    if label < 0 or (num_classes is not None and label >= num_classes):
        top = f"{num_classes - 1}" if num_classes is not None else "any"
        raise ValueError(f"expected a label in 0..{top}, got {label}")
    return label


def _read(list_file, prefix, num_classes, skip_bad, parse) -> Tuple[List[VideoRecord], List[str]]:
    list_file = str(list_file)
    records, problems = [], []
    for number, text in _lines(list_file):
        try:
            records.append(parse(text.split(), number))
        except ValueError as exc:
            err = AnnotationError(list_file, number, str(exc))
            if not skip_bad:
                raise err from None
            problems.append(str(err))
    return records, problems


def read_video_list(list_file, prefix="", *, num_classes: Optional[int] = None,
                    skip_bad: bool = False, check_files: bool = True
                    ) -> Tuple[List[VideoRecord], List[str]]:
    """MMAction2 VideoDataset list: ``path label`` a line -> (records, problems).

    ``check_files``: a path that is not an existing file under ``prefix`` is a bad line.
    """
    source = str(list_file)

    def parse(fields, number):
        if len(fields) != 2:
            raise ValueError(f"expected 2 fields 'relative/path.mp4 label', got {len(fields)}")
        path = os.path.join(str(prefix), fields[0]) if prefix else fields[0]
        label = _label(fields[1], num_classes)
        if check_files and not os.path.isfile(path):
            raise ValueError(f"expected an existing video file, not found: {path}")
        return VideoRecord(path=path, label=label, line=number, source=source)

    return _read(list_file, prefix, num_classes, skip_bad, parse)


def read_rawframe_list(list_file, prefix="", *, num_classes: Optional[int] = None,
                       skip_bad: bool = False, check_files: bool = True,
                       filename_tmpl: Optional[str] = None, start_index: int = 1
                       ) -> Tuple[List[VideoRecord], List[str]]:
    """MMAction2 RawframeDataset list: ``frame_dir total_frames label`` a line.

    ``check_files``: the folder must exist; given ``filename_tmpl`` (DataConfig's, e.g.
    ``img_{:05}.jpg``) its first frame ``filename_tmpl.format(start_index)`` must too.
    """
    source = str(list_file)

    def parse(fields, number):
        if len(fields) != 3:
            raise ValueError(f"expected 3 fields 'frame_dir total_frames label', got {len(fields)}")
        path = os.path.join(str(prefix), fields[0]) if prefix else fields[0]
        total = _int_field(fields[1], "total_frames")
        if total <= 0:
            raise ValueError(f"expected a positive total_frames, got {total}")
        label = _label(fields[2], num_classes)
        if check_files:
            if not os.path.isdir(path):
                raise ValueError(f"expected an existing frame folder, not found: {path}")
            if filename_tmpl:
                first = os.path.join(path, filename_tmpl.format(start_index))
                if not os.path.isfile(first):
                    raise ValueError(f"expected the first frame {first} (filename_tmpl "
                                     f"{filename_tmpl!r}, start_index {start_index})")
        return VideoRecord(path=path, label=label, line=number, source=source, num_frames=total)

    return _read(list_file, prefix, num_classes, skip_bad, parse)


def read_label_map(path) -> List[str]:
    """Class names, one a line (line i = class i); blank lines are not allowed inside. UTF-8
    as the lists (a byte-order mark read past, another encoding one error naming the line)."""
    path = str(path)
    names = [line.strip() for _, line in _text_lines(path, "label map", "label map")]
    while names and not names[-1]:
        names.pop()
    for number, name in enumerate(names, start=1):
        if not name:
            raise AnnotationError(path, number, "expected a class name, got a blank line")
    if not names:
        raise AnnotationError(path, None, "expected one class name a line, the file is empty")
    return names
