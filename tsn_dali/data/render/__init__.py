"""Stage 3, rendering: carrying plans out, batch by batch.

``slicing`` cuts the GOPs a clip needs into an in-memory container; the executors
(``executors/``: dali-gpu, dali-cpu, reference) decode, crop, flip and normalise exactly
what a ClipPlan says, never deciding anything; ``order`` fixes which samples each rank
takes in which batch (shards, resume); ``prefetch`` prepares ahead while the executor
decodes; ``handoff`` keeps a batch alive until the consumer's work on it is done;
``loader.ClipLoader`` is what users iterate. May use plan/, index/, media/ and errors.
"""
