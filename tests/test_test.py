"""tsn_dali.test: multi-view testing, MMAction2-style --dump, checkpoint kinds and errors."""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
from helpers.mmengine_pickle import (have_mmaction, have_mmengine, mmaction_checkpoint,  # noqa: E402
                                    runner_checkpoint)
from helpers.mmaction_layouts import to_mmaction_key  # noqa: E402
from helpers.real_videos import VIDEOS  # noqa: E402
from helpers.tiny_train import make_videos, train_recipe  # noqa: E402

from tsn_dali.models import build_model  # noqa: E402

import tsn_dali.test as test_mod  # noqa: E402
from tsn_dali.config import load_recipe  # noqa: E402
from tsn_dali.data.render.loader import build_loader  # noqa: E402
from tsn_dali.engine.metrics import mean_class_accuracy  # noqa: E402

NUM_VIDEOS = 5  # odd: the last test batch of 2 is padded


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_videos(tmp_path_factory.mktemp("tiny_test"), num_videos=NUM_VIDEOS)
    recipe_path = train_recipe(root, extra="reported:\n  top1: 72.83\n  top5: 90.65\n")
    recipe = load_recipe(recipe_path)
    builder = build_model
    torch.manual_seed(1)
    model = builder(recipe.model)
    ckpt = root / "model.pth"
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict()}, ckpt)
    return root, recipe_path, recipe, builder, model, ckpt


@pytest.fixture
def patched(setup, monkeypatch):
    monkeypatch.setattr(test_mod, "build_model", setup[3])
    return setup


def test_dump_and_printed_accuracy_match_returned_metrics(patched, tmp_path, capsys):
    root, recipe_path, recipe, _, model, ckpt = patched
    dump = tmp_path / "out" / "result.pkl"
    metrics = test_mod.run([str(recipe_path), str(ckpt), "--dump", str(dump), "--device", "cpu",
                             "--no-progress"])
    out = capsys.readouterr().out
    assert metrics["num_videos"] == NUM_VIDEOS and metrics["samples"] == list(range(NUM_VIDEOS))
    assert metrics["num_views"] == 75 and metrics["num_skipped"] == 0  # 25 clips x 3 crops
    assert metrics["reported_top1"] == 72.83 and metrics["checkpoint_kind"] == "tsn_dali"

    with open(dump, "rb") as f:
        records = pickle.load(f)
    assert isinstance(records, list) and len(records) == NUM_VIDEOS
    assert set(records[0]) == {"pred_score", "pred_label", "gt_label", "num_classes"}
    labels = np.array([int(r["gt_label"][0]) for r in records])
    assert labels.tolist() == [i % 3 for i in range(NUM_VIDEOS)]  # list order = video order
    scores = np.stack([r["pred_score"].numpy() for r in records])
    assert scores.shape == (NUM_VIDEOS, 3)
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)  # probabilities
    assert [int(r["pred_label"][0]) for r in records] == scores.argmax(1).tolist()
    top1 = 100.0 * float((scores.argmax(1) == labels).mean())
    assert metrics["top1"] == pytest.approx(top1)
    assert metrics["top5"] == pytest.approx(100.0)  # 3 classes: top-5 clipped to top-3
    assert metrics["mean_class_accuracy"] == pytest.approx(100 * mean_class_accuracy(scores, labels))
    assert f"{'top1':<22}{top1:>10.2f}{72.83:>10.2f}" in out

    # The last video sits in the padded last batch: its scores are the model's own.
    loader = build_loader(recipe, "test", progress=False)
    batch = list(loader)[-1]
    loader.close()
    assert batch.samples.tolist() == [4, -1]
    model.eval()
    with torch.no_grad():
        expected = model.predict(batch.clips[:1].float())[0].numpy()
    np.testing.assert_allclose(scores[4], expected, rtol=1e-4, atol=1e-6)


def test_k400_protocol_is_25_clips_by_10_crops(setup):
    recipe = load_recipe(setup[1], ["data.test_pipeline=tsn_test_tencrop"])
    loader = build_loader(recipe, "test", progress=False)
    batch = next(iter(loader))
    loader.close()
    # MMAction2 TSN test: Resize(-1, 256), TenCrop(224): here short side 40, crops of 32
    assert loader.num_views == 250 and tuple(batch.clips.shape) == (2, 250, 3, 32, 32)


def test_wrong_class_count_is_one_line_error(patched, tmp_path, capsys):
    _, recipe_path, recipe, builder, _, _ = patched
    cfg = copy.deepcopy(recipe.model)
    cfg.num_classes = 4
    bad = tmp_path / "four_classes.pth"
    torch.save({"model": builder(cfg).state_dict()}, bad)
    assert test_mod.main([str(recipe_path), str(bad), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {bad}: ")
    assert "[4" in err and "model.num_classes=3" in err


def test_truncated_and_foreign_checkpoints_are_one_line_errors(patched, tmp_path, capsys):
    _, recipe_path, _, _, _, ckpt = patched
    cut = tmp_path / "cut.pth"
    cut.write_bytes(ckpt.read_bytes()[:1000])
    foreign = tmp_path / "foreign.pth"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path, words in ((cut, "truncated or corrupt"), (foreign, "expected a tsn_dali checkpoint")):
        assert test_mod.main([str(recipe_path), str(path), "--device", "cpu", "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"error: {path}: ") and words in err


def test_a_dump_that_cannot_be_written_is_a_usage_error(patched, tmp_path, capsys):
    _, recipe_path, _, _, _, ckpt = patched
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder.pkl").mkdir()
    under_a_file = tmp_path / "a_file" / "out" / "result.pkl"
    for dump, words in ((under_a_file, f"({tmp_path / 'a_file'} is not a writable folder)"),
                        (tmp_path / "a_folder.pkl", "is a folder")):
        assert test_mod.main([str(recipe_path), str(ckpt), "--dump", str(dump), "--device", "cpu",
                              "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"error: --dump {dump}: ") and words in err, err
    test_mod.parse_args([str(recipe_path), str(ckpt), "--dump", str(tmp_path / "new" / "folder" / "r.pkl")])


@pytest.mark.parametrize("writer", ["torch.save", "mmengine Runner"])
def test_mmaction2_checkpoint_is_converted(patched, tmp_path, writer):
    """An MMAction2-layout checkpoint (backbone.* in mmcv ConvModule names, cls_head.fc_cls.*)
    built from our own weights scores exactly as our checkpoint does: a bare
    ``{"state_dict"}``, and the file mmengine's Runner.save_checkpoint writes around it
    (message_hub, optimizer, ...; where mmengine is installed)."""
    root, recipe_path, _, _, model, ckpt = patched
    sd = model.state_dict()
    mm = {to_mmaction_key(k): v for k, v in sd.items()}
    assert None not in mm, "every key of the model maps to an MMAction2 key"
    mm_path = tmp_path / "mmaction.pth"
    if writer == "torch.save":
        torch.save({"state_dict": mm}, mm_path)
    elif not have_mmengine():
        pytest.skip("mmengine not installed: no Runner to write the file")
    else:
        runner_checkpoint(mm_path, state=mm)
    ours = test_mod.run([str(recipe_path), str(ckpt), "--device", "cpu", "--no-progress",
                          "--set", "data.test_pipeline=tsn_val"])
    theirs = test_mod.run([str(recipe_path), str(mm_path), "--device", "cpu", "--no-progress",
                            "--set", "data.test_pipeline=tsn_val"])  # no --allow-pickle needed
    assert theirs["checkpoint_kind"] == "mmaction2"
    assert theirs["top1"] == ours["top1"] and theirs["mean_class_accuracy"] == ours["mean_class_accuracy"]


@pytest.fixture(scope="module")
def mmaction_trained(tmp_path_factory):
    if not have_mmaction():
        pytest.skip("mmaction2 (with mmengine) not installed")
    return mmaction_checkpoint(tmp_path_factory.mktemp("mmaction_runner"), classes=3, size=32, views=2)


def test_a_checkpoint_mmaction2_trained_loads_and_scores_as_mmaction2(setup, mmaction_trained, capsys):
    """MMAction2's own TSN (its ResNet-18, TSNHead), trained one step by mmengine's Runner and
    saved by its CheckpointHook (message_hub included): tsn_dali.test reads it without
    --allow-pickle, and on identical frames the model with its weights gives MMAction2's
    scores. The check can fail: another model's scores differ."""
    _, recipe_path, recipe, _, _, _ = setup
    ckpt = mmaction_trained["checkpoint"]
    assert test_mod.main([str(recipe_path), str(ckpt), "--device", "cpu", "--no-progress",
                          "--set", "data.test_pipeline=tsn_val"]) == 0
    assert capsys.readouterr().err.strip() == ""  # no warning: the file was read weights-only
    mean = torch.tensor(recipe.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.data.std).view(1, 3, 1, 1)
    clips = ((mmaction_trained["frames"].float() - mean) / std)[None]
    model = build_model(recipe.model)
    assert test_mod.load_weights(model, ckpt, recipe) == "mmaction2"
    ours = model.eval().predict(clips)[0]
    assert torch.allclose(ours, mmaction_trained["scores"], rtol=0, atol=1e-6), (ours, mmaction_trained["scores"])
    torch.manual_seed(3)
    other = build_model(recipe.model).eval().predict(clips)[0]
    assert not torch.allclose(other, mmaction_trained["scores"], rtol=0, atol=1e-3)


def test_real_clips_are_scored_once_each(patched, tmp_path):
    """Real H.264 clips (TSN_DALI_TEST_VIDEOS, from MMAction2's demo/test data) through the test path."""
    videos = VIDEOS
    names = ["short_32f.mp4", "demo.mp4", "test_mpeg4.avi"]
    if not all((videos / n).is_file() for n in names):
        pytest.skip(f"{videos} with {names} not present")
    _, _, _, _, _, ckpt = patched
    (tmp_path / "real.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    recipe = train_recipe(tmp_path, short_side=32, input_size=28)
    dump = tmp_path / "real.pkl"
    metrics = test_mod.run([str(recipe), str(ckpt), "--device", "cpu", "--no-progress",
                             "--dump", str(dump), "--set", f"data.root={videos}",
                             "--set", f"data.test_list={tmp_path / 'real.txt'}",
                             "--set", f"data.test_prefix={videos}"])
    assert metrics["num_videos"] == 3 and metrics["samples"] == [0, 1, 2]
    with open(dump, "rb") as f:
        records = pickle.load(f)
    assert [int(r["gt_label"][0]) for r in records] == [0, 1, 2]
    assert all(np.isfinite(r["pred_score"].numpy()).all() for r in records)


def test_the_first_line_says_the_precision_scores_are_computed_in(patched, capsys, monkeypatch):
    """MMAction2 tests in float32: the first line of output says float32 / bf16 autocast /
    fp16 autocast and why; ``--amp off`` is float32 even where the recipe (or auto) says bf16."""
    _, recipe_path, _, _, _, ckpt = patched
    args = [str(recipe_path), str(ckpt), "--device", "cpu", "--no-progress", "--set", "data.test_pipeline=tsn_val"]
    metrics = test_mod.run(args + ["--amp", "off", "--set", "train.amp=bf16"])
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("tsn_dali.test: scoring in float32 (amp off (as set))"), first
    assert metrics["amp"] == "off (as set)"

    from tsn_dali.engine.amp import AmpChoice

    bf16 = test_mod.precision_line(AmpChoice("bf16", "auto: CPU has AMX-BF16"), "bfloat16")
    assert bf16.startswith("tsn_dali.test: scoring in bf16 autocast (amp bf16 (auto: CPU has AMX-BF16)); "
                           "frames bfloat16") and "--amp off" in bf16
    assert test_mod.precision_line(AmpChoice("fp16", "as set"), "float16").startswith(
        "tsn_dali.test: scoring in fp16 autocast")
    # auto on a CPU that has bf16: the line names bf16 autocast before any score is computed
    monkeypatch.setattr("tsn_dali.engine.amp.cpu_bf16_feature", lambda: "AMX-BF16")
    monkeypatch.setattr(test_mod, "build_model", lambda cfg: (_ for _ in ()).throw(RuntimeError("stop")))
    with pytest.raises(RuntimeError, match="stop"):
        test_mod.run(args + ["--set", "train.amp=auto"])
    assert capsys.readouterr().out.splitlines()[0].startswith("tsn_dali.test: scoring in bf16 autocast (amp bf16 (auto")


def test_amp_off_is_an_option_and_a_wrong_value_is_a_usage_error(patched, capsys):
    _, recipe_path, _, _, _, ckpt = patched
    assert test_mod.parse_args([str(recipe_path), str(ckpt), "--amp", "off"]).amp == "off"
    assert test_mod.main([str(recipe_path), str(ckpt), "--amp", "float32"]) == 2
    assert "--amp" in capsys.readouterr().err
