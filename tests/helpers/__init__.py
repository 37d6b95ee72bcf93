"""Test helpers (an importable package: ``from helpers.tiny_clips import make_dataset``).

tiny_clips: numbered-clip datasets and recipes for loader tests; tiny_train: small videos and
recipes for train/test runs (both build on tiny_clips' recipe rule); bad_videos: broken files;
mmengine_pickle: MMAction2-style checkpoints; stall, torchrun_loader, index_ranks: scripts
run in subprocesses by the tests.
"""
