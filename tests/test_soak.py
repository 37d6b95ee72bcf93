"""The soak benchmark (tsn_dali.soak): per-epoch samples recorded in a fresh process per
executor, figures after the warm-up, JSON / markdown / plot written. No timing or growth
assertion: those are the benchmark's to report."""
from __future__ import annotations

import json

import pytest

from tsn_dali import soak


def test_summarize_fits_the_growth_after_warmup():
    samples = [{"epoch": e, "rss_mib": 500.0 + (300 if e else 0) + 2.0 * e, "children_rss_mib": 0.0,
                "threads": 30 if e else 5, "py_threads": 4, "fds": 7, "children": 0} for e in range(7)]
    samples.append({"epoch": None, "rss_mib": 1.0, "children_rss_mib": 0.0, "threads": 2,
                    "py_threads": 1, "fds": 3, "children": 0})  # after close: not an epoch
    f = soak.summarize(samples, warmup=2)
    assert f["epochs"] == [3, 4, 5, 6]
    assert f["rss_mib"]["slope_per_epoch"] == pytest.approx(2.0)
    assert f["rss_mib"]["change"] == pytest.approx(6.0) and f["rss_mib"]["first"] == pytest.approx(806.0)
    assert f["threads"] == {"min": 30, "max": 30} and f["fds"] == {"min": 7, "max": 7}
    with pytest.raises(ValueError, match="expected at least 2"):
        soak.summarize(samples, warmup=5)


def test_sample_reads_this_process():
    s = soak.sample()
    assert s["rss_mib"] > 10 and s["hwm_mib"] >= s["rss_mib"] and s["threads"] >= 1 and s["fds"] >= 3


def test_tiny_soak_records_every_epoch(tmp_path):
    out = tmp_path / "out"
    results = soak.run(["--executors", "reference", "--epochs", "3", "--warmup", "1", "--videos", "16",
                         "--frames", "8", "--width", "64", "--height", "48", "--data", str(tmp_path / "data"),
                         "--out", str(out), "--set", "train.amp='off'", "--set", "data.input_size=32",
                         "--set", "data.short_side=40", "--set", "loader.batch_size=4",
                         "--set", "loader.reference_workers=1"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"][0]["executor"] == "reference" == results["runs"][0]["executor"]
    samples = saved["runs"][0]["samples"]
    assert [s["epoch"] for s in samples] == [0, 1, 2, 3]
    for s in samples[1:]:
        assert s["rss_mib"] > 0 and s["threads"] > 0 and s["seconds"] > 0 and 0 <= s["top1"] <= 100
    assert samples[1]["children"] == 2  # one DataLoader worker per loader (train, val)
    assert saved["runs"][0]["after_close"]["children"] == 0
    fig = saved["runs"][0]["figures"]
    assert fig["epochs"] == [2, 3] and "slope_per_epoch" in fig["rss_mib"]
    md = (out / "results.md").read_text()
    assert "| reference |" in md and "| closed |" in md
    assert (out / "soak.png").stat().st_size > 0
    assert not list(out.glob(".worker-*"))


def test_a_gpu_soak_generates_what_nvdec_decodes():
    from tsn_dali.soak import build_parser, data_spec

    gpu = data_spec(build_parser().parse_args(["--device", "cuda"]))
    assert (gpu["codec"], gpu["width"], gpu["height"]) == ("h264", 340, 256)
    cpu = data_spec(build_parser().parse_args([]))
    assert (cpu["codec"], cpu["width"], cpu["height"]) == ("vp9", 128, 96)
    mine = data_spec(build_parser().parse_args(["--device", "cuda", "--codec", "vp9", "--width", "256"]))
    assert (mine["codec"], mine["width"], mine["height"]) == ("vp9", 256, 256)
