"""Training/testing machinery shared by ``tsn_dali.train`` and ``tsn_dali.test``.

Small modules, plain functions: ``distributed`` (torchrun setup, gathers),
``checkpoint`` (atomic save, safe load, RNG state), ``optim`` (SGD param groups, LR
schedule), ``metrics`` (MMAction2's accuracy rules), ``logs`` (JSONL, progress bar,
optional TensorBoard), ``signals`` (SIGINT/SIGTERM to a resumable stop).
"""
