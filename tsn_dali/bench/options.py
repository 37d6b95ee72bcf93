"""The benchmark's command-line vocabulary and its checks, importing no torch (so that a bad
``--executors``, ``--parts`` or ``--peers`` is said before torch loads).

An executor variant is a name and ``+``-joined options, e.g. ``dali-gpu+whole+copy``
(tsn_dali.bench.measure says what each option does).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from tsn_dali.config import EXECUTORS
from tsn_dali.errors import UsageError

PARTS = ("loader", "model", "e2e", "gop")
GOP_CODECS = ("h264", "vp9")
GOP_VIEWS = ("train", "test")
CODEC_NAMES = {"h264": "H.264", "vp9": "VP9"}
PEERS = ("mmaction2", "decord-opencv", "torchcodec", "torchcodec-cuda")  # tsn_dali.bench.peers
EXECUTOR_NAMES = tuple(EXECUTORS)  # what the bench measures, side by side (auto: as it resolves here)


@dataclass(frozen=True)
class Variant:
    """An executor and the loader options it is measured with (module docstring)."""

    label: str
    executor: str
    slice_gops: bool = True
    handoff: str = "view"
    decode_sessions: Optional[int] = None
    decode: str = "native"
    cpu_decoder: Optional[str] = None  # gops | decord (None: the executor's default)
    resize: Optional[str] = None  # uint8 | float (reference; None: its default)


def parse_variant(text: str) -> Variant:
    """``dali-gpu+whole+sessions4`` -> Variant (UsageError naming what is wrong)."""
    name, *options = text.strip().split("+")
    if name not in EXECUTOR_NAMES:
        raise UsageError(f"--executors: unknown executor {name!r}; expected one of {', '.join(EXECUTOR_NAMES)}")
    fields = {}
    for opt in options:
        if opt == "whole":
            fields["slice_gops"] = False
        elif opt == "copy":
            fields["handoff"] = "copy"
        elif opt == "mmaction":
            fields["decode"] = "mmaction"
        elif re.fullmatch(r"sessions\d+", opt):
            fields["decode_sessions"] = int(opt[len("sessions"):])
        elif opt in ("gops", "decord"):
            fields["cpu_decoder"] = opt
        elif opt in ("uint8", "float"):
            fields["resize"] = opt
        else:
            raise UsageError(f"--executors: {text}: unknown option {opt!r}; expected whole, copy, "
                             "mmaction, sessionsN, gops, decord, uint8 or float")
    dali_only = set(fields) - {"cpu_decoder", "resize"}
    if dali_only and name == "reference":
        raise UsageError(f"--executors: {text}: the reference executor takes only gops, decord, uint8, float")
    if "resize" in fields and name != "reference":
        raise UsageError(f"--executors: {text}: uint8 and float are the reference executor's")
    if fields and name == "auto":
        raise UsageError(f"--executors: {text}: auto takes no options (it is what build_executor picks)")
    return Variant(label=text.strip(), executor=name, **fields)


def check_args(args) -> None:
    """The command-line checks argparse cannot do (UsageError: status 2), before any work."""
    for name in ("iters", "warmup", "rounds", "batch_size", "test_batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0 and not (name == "warmup" and value == 0):
            raise UsageError(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    for part in (p.strip() for p in args.parts.split(",")):
        if part and part not in PARTS:
            raise UsageError(f"--parts: unknown part {part!r}; expected some of {', '.join(PARTS)}")
    for text in args.executors.split(","):
        if text.strip():
            parse_variant(text)
    for name, allowed, values in (("--gop-codec", GOP_CODECS, args.gop_codec),
                                  ("--gop-views", GOP_VIEWS, args.gop_views)):
        for value in (v.strip() for v in values.split(",")):
            if value and value not in allowed:
                raise UsageError(f"{name}: unknown {value!r}; expected some of {', '.join(allowed)}")
    for peer in (p.strip() for p in (args.peers or "").split(",")):
        if peer and peer not in PEERS:
            raise UsageError(f"--peers: unknown peer {peer!r}; expected some of {', '.join(PEERS)}")


__all__ = ["CODEC_NAMES", "EXECUTOR_NAMES", "GOP_CODECS", "GOP_VIEWS", "PARTS", "PEERS", "Variant", "check_args",
           "parse_variant"]
