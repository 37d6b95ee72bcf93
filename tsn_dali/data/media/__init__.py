"""The floor under the three stages: video files in and out.

``decoding``: frames decoded on the CPU outside DALI (decord, PyAV, rawframe folders);
``videoio``: writing videos with PyAV and numbered test frames; ``synthetic``: the demo's
generated dataset (``python -m tsn_dali.data.media.synthetic``). Imports no stage.
"""
