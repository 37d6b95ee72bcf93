"""tsn_dali: TSN video action recognition trained and tested on a GPU data path (NVIDIA DALI).

Layers, each importing only those before it (docs/ARCHITECTURE.md): ``errors`` and
``config`` (recipes) -> ``data`` (index -> plan -> render: the loader, usable on its own) ->
``models`` (TSN, backbones) -> ``engine`` (step, checkpoints, evaluation) -> the commands
``train``, ``test``, ``demo``, ``bench``, ``prepare``, ``index`` and the tools, each run as
``python -m tsn_dali.<command>``; ``cli`` gives them one way to say errors and exit.
"""
__version__ = "0.2.0"
