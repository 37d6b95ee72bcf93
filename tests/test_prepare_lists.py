"""python -m tsn_dali.prepare lists: Kinetics CSVs and Something-Something V2 JSONs to
MMAction2 lists and label maps, missing / unreadable / unknown-class videos reported,
chained re-encode."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsn_dali.data.index.annotations import read_label_map, read_video_list
from tsn_dali.data.index.cache import info_fields, read_rows
from tsn_dali.data.index.video_index import probe_video
from tsn_dali.data.media.videoio import write_numbered_video
from tsn_dali.prepare import main as prepare_main
from tsn_dali.prepare.lists import convert_label, kinetics_clip_name, main, prepare_lists

HERE = Path(__file__).resolve().parent


def _clip(path, frames=12, codec="h264"):
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_numbered_video(str(path), frames, 64, 48, codec=codec)


@pytest.fixture
def kinetics(tmp_path):
    """K400-like: train CSV (MMAction2's name) over class folders, one video missing, one
    broken; val CSV (DeepMind's name, validate.csv) over one flat folder, with a missing
    video and a class the train CSV lacks."""
    root = tmp_path / "data" / "kinetics400"
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "kinetics_train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        '"air drumming",aaaaaaaaaaa,10,20,train\n'
        "abseiling,bbbbbbbbbbb,0.0,10.0,train\n"
        '"petting animal (not cat)",c-c_ccccccc,5,15,train\n'
        "abseiling,ddddddddddd,30,40,train\n"
        '"air drumming",eeeeeeeeeee,1,11,train\n')
    (ann / "validate.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,fffffffffff,0,10,validate\n"
        '"air drumming",ggggggggggg,2,12,validate\n'
        '"juggling fire",hhhhhhhhhhh,0,10,validate\n'
        "abseiling,iiiiiiiiiii,0,10,validate\n")
    train = root / "videos_train"
    _clip(train / "air_drumming" / "aaaaaaaaaaa_000010_000020.mp4", 12)
    _clip(train / "abseiling" / "bbbbbbbbbbb_000000_000010.mp4", 14)
    _clip(train / "petting_animal_(not_cat)" / "c-c_ccccccc_000005_000015.mp4", 16)
    (train / "air_drumming" / "eeeeeeeeeee_000001_000011.mp4").write_text("an error page, not a video\n")
    _clip(root / "videos_val" / "fffffffffff_000000_000010.mp4", 10)
    _clip(root / "videos_val" / "ggggggggggg_000002_000012.mp4", 11)
    return root


def test_kinetics_csvs_to_lists_with_missing_and_broken_reported(kinetics, capsys):
    assert main(["kinetics400", "--root", str(kinetics), "--no-progress"]) == 0
    root = kinetics
    # MMAction2's class order: converted names sorted; the label map spells them as the CSV
    assert read_label_map(root / "label_map_k400.txt") == ["abseiling", "air drumming", "petting animal (not cat)"]
    assert (root / "kinetics400_train_list_videos.txt").read_text() == (
        "air_drumming/aaaaaaaaaaa_000010_000020.mp4 1\n"
        "abseiling/bbbbbbbbbbb_000000_000010.mp4 0\n"
        "petting_animal_(not_cat)/c-c_ccccccc_000005_000015.mp4 2\n")
    # the val videos lie in one folder: level 1 found them
    assert (root / "kinetics400_val_list_videos.txt").read_text() == (
        "fffffffffff_000000_000010.mp4 0\nggggggggggg_000002_000012.mp4 1\n")
    records, problems = read_video_list(root / "kinetics400_train_list_videos.txt", root / "videos_train",
                                        num_classes=3)
    assert len(records) == 3 and problems == []

    out = capsys.readouterr().out
    assert ("train 3 listed, 1 missing, 1 unreadable; val 2 listed, 1 missing, 0 unreadable, "
            "1 of unknown class") in out
    report = (root / "kinetics400_lists_report.txt").read_text().splitlines()
    ann = root / "annotations"
    assert report[0].startswith("# python -m tsn_dali.prepare lists kinetics400: train 3 listed")
    assert report[1:] == [
        f"train missing: {ann / 'kinetics_train.csv'}:5: "
        f"{root / 'videos_train' / 'abseiling' / 'ddddddddddd_000030_000040.mp4'}: not found",
        f"train unreadable: {ann / 'kinetics_train.csv'}:6: "
        f"{root / 'videos_train' / 'air_drumming' / 'eeeeeeeeeee_000001_000011.mp4'}: " + report[2].split(": ", 3)[3],
        f"val unknown_class: {ann / 'validate.csv'}:4: {root / 'videos_val' / 'hhhhhhhhhhh_000000_000010.mp4'}: "
        "class 'juggling fire' is not among the train CSV's classes",
        f"val missing: {ann / 'validate.csv'}:5: {root / 'videos_val' / 'iiiiiiiiiii_000000_000010.mp4'}: not found"]
    assert report[2].split(": ", 3)[3].startswith("not a readable video")
    # the probes went to the cache the recipes read (<data.root>/.tsn_dali_index)
    rows = read_rows(str(root.parent / ".tsn_dali_index" / "video_index.json"), info_fields())[1]
    assert len(rows) == 6  # 5 videos + the broken one; nothing missing is cached


def test_kinetics_naming_rules():
    assert kinetics_clip_name("abc", "5.0", "15.9") == "abc_000005_000015"
    assert kinetics_clip_name("x", "123456", "1234567") == "x_123456_1234567"
    assert convert_label('"petting animal (not cat)"') == "petting_animal_(not_cat)"


def test_folders_with_spaces_are_reported_not_listed(kinetics, capsys):
    os.rename(kinetics / "videos_train" / "air_drumming", kinetics / "videos_train" / "air drumming")
    summary = prepare_lists("kinetics400", str(kinetics), check="exists", progress=False)
    assert summary["splits"]["train"]["missing"] == 3 and summary["splits"]["train"]["listed"] == 2
    assert any("'air drumming'" in n and "rename_classnames" in n for n in summary["notes"])
    listed = (kinetics / "kinetics400_train_list_videos.txt").read_text().splitlines()
    assert [line.split()[0].split("/")[0] for line in listed] == ["abseiling", "petting_animal_(not_cat)"]


@pytest.fixture
def sthv2(tmp_path):
    root = tmp_path / "data" / "sthv2"
    ann = root / "annotations"
    ann.mkdir(parents=True)
    labels = {"Holding something": "0", "Putting something on a surface": "1",
              "Pushing something from left to right": "2"}
    (ann / "something-something-v2-labels.json").write_text(json.dumps(labels))

    def item(vid, template):
        return {"id": str(vid), "label": template.lower(), "template": template, "placeholders": ["pen"]}

    (ann / "something-something-v2-train.json").write_text(json.dumps([
        item(1, "Holding [something]"), item(2, "Putting [something] on a surface"),
        item(3, "Holding [something]"), item(4, "Pushing [something] from left to right")]))
    (ann / "something-something-v2-validation.json").write_text(json.dumps([
        item(5, "Pushing [something] from left to right"), item(6, "Spinning [something]")]))
    (ann / "something-something-v2-test.json").write_text(json.dumps([{"id": "7"}]))
    videos = root / "videos"
    for vid, frames in ((1, 12), (2, 9), (5, 10)):
        _clip(videos / f"{vid}.webm", frames, codec="vp9")
    full = _clip(videos / "full.mp4", 30)
    (videos / "4.webm").write_bytes(Path(full).read_bytes()[:600])  # a cut download
    os.remove(full)
    return root


def test_sthv2_jsons_to_lists_with_missing_and_broken_reported(sthv2, capsys):
    assert main(["sthv2", "--root", str(sthv2), "--no-progress", "--workers", "2"]) == 0
    assert read_label_map(sthv2 / "label_map_sthv2.txt") == [
        "Holding something", "Putting something on a surface", "Pushing something from left to right"]
    assert (sthv2 / "sthv2_train_list_videos.txt").read_text() == "1.webm 0\n2.webm 1\n"
    assert (sthv2 / "sthv2_val_list_videos.txt").read_text() == "5.webm 2\n"
    out = capsys.readouterr().out
    assert "train 2 listed, 1 missing, 1 unreadable; val 1 listed, 0 missing, 0 unreadable, 1 of unknown class" in out
    report = (sthv2 / "sthv2_lists_report.txt").read_text().splitlines()[1:]
    train_json = sthv2 / "annotations" / "something-something-v2-train.json"
    assert report[0] == f"train missing: {train_json}: item 3: {sthv2 / 'videos' / '3.webm'}: not found"
    assert report[1].startswith(f"train unreadable: {train_json}: item 4: {sthv2 / 'videos' / '4.webm'}: ")
    assert report[2] == (f"val unknown_class: {sthv2 / 'annotations' / 'something-something-v2-validation.json'}: "
                         f"item 2: {sthv2 / 'videos' / '6.webm'}: template 'Spinning something' is not in the labels file")


def test_chained_reencode_writes_short_gop_copies_and_their_lists(kinetics, capsys):
    code = main(["kinetics400", "--root", str(kinetics), "--splits", "train", "--no-progress",
                 "--gop", "4", "--short-side", "32", "--workers", "1"])
    assert code == 0
    out = kinetics / "videos_train_gop4_short32"
    assert (out / "kinetics400_train_list_videos.txt").read_text() == \
        (kinetics / "kinetics400_train_list_videos.txt").read_text()
    info = probe_video(out / "abseiling" / "bbbbbbbbbbb_000000_000010.mp4")
    assert info.ok and info.num_frames == 14 and (info.width, info.height) == (42, 32)
    assert info.keyframe_interval == pytest.approx(14 / 4)  # keyframes 0, 4, 8, 12
    assert "re-encoded train: 3 written" in capsys.readouterr().out


def test_annotation_errors_exit_1_and_usage_errors_exit_2_in_one_line(kinetics, sthv2, capsys):
    ann = kinetics / "annotations"
    (ann / "kinetics_train.csv").write_text("label,youtube_id,time_start\nabseiling,x,1\n")
    assert main(["kinetics400", "--root", str(kinetics)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {ann / 'kinetics_train.csv'}:1: expected columns label, youtube_id, time_start, " \
                  "time_end, split; time_end missing (header: label,youtube_id,time_start)"
    (ann / "kinetics_train.csv").write_text("label,youtube_id,time_start,time_end\nabseiling,x,1,2\nabseiling,y,1,later\n")
    assert main(["kinetics400", "--root", str(kinetics)]) == 1
    assert "kinetics_train.csv:3: time_end: expected seconds, got 'later'" in capsys.readouterr().err
    os.remove(ann / "kinetics_train.csv")
    assert main(["kinetics400", "--root", str(kinetics)]) == 1
    assert "no train annotations: expected one of kinetics_train.csv, train.csv" in capsys.readouterr().err
    assert main(["sthv2", "--root", str(sthv2), "--splits", "train,test"]) == 2
    assert "test file has no labels" in capsys.readouterr().err
    assert main(["sthv2", "--root", str(sthv2), "--short-side", "64"]) == 2
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error
        main(["kinetics800"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_the_reencode_command_is_unchanged_and_lists_dispatches(kinetics, tmp_path):
    """``python -m tsn_dali.prepare LIST ...`` still re-encodes; ``lists`` is the new command."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    lst = tmp_path / "one.txt"
    lst.write_text("abseiling/bbbbbbbbbbb_000000_000010.mp4 0\n")
    run = subprocess.run([sys.executable, "-m", "tsn_dali.prepare", str(lst), "--prefix",
                          str(kinetics / "videos_train"), "--out", str(tmp_path / "out"), "--gop", "4",
                          "--no-progress"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "1 written" in run.stdout, run.stderr
    run = subprocess.run([sys.executable, "-m", "tsn_dali.prepare", "lists", "kinetics400", "--root",
                          str(kinetics), "--check", "exists", "--no-progress"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "train 4 listed, 1 missing" in run.stdout, run.stderr
    with pytest.raises(SystemExit) as exit_:  # argparse prints the help and exits 0
        prepare_main(["lists", "--help"])
    assert exit_.value.code == 0
