"""Errors raised by the data path. Each names the file and what went wrong, on one line."""
from tsn_dali.errors import UserError


class VideoDecodeError(UserError, RuntimeError):
    """A video that could not be decoded (missing, truncated, not a video, no decoder)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class PipelineFailure(UserError, RuntimeError):
    """The executor failed as a whole (out of memory, a CUDA or driver error, a DLPack
    hand-over, a decoder that does not start), not one video: never charged to a video, so
    the loader stops instead of replacing video after video. ``str(err)`` is one line."""

    def __init__(self, executor: str, what: str, error: str):
        self.executor, self.what, self.error = executor, what, error
        super().__init__(f"{executor} failed as a whole ({what}), not one video: {error}")


class DatasetError(UserError, ValueError):
    """A split that cannot be used as a whole (bad videos under ``on_bad_video: error``, none
    left). ``str(err)`` is one line: ``<list file>: <what is wrong>``."""

    def __init__(self, list_file: str, message: str):
        self.list_file, self.message = str(list_file), message
        super().__init__(f"{list_file}: {message}")


class PipelineError(UserError, ValueError):
    """A pipeline file (pipelines/*.yaml) that does not validate.

    ``str(err)`` is one line: ``<file>:<line>: <op[.param]>: <what was expected>``.
    """

    def __init__(self, file: str, key: str, message: str, line=None):
        self.file, self.key, self.line, self.message = str(file), key, line, message
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


class LoaderStalled(RuntimeError):
    """No batch came from the loader's render thread for ``seconds`` (``loader.stall_timeout``).

    ``paths`` are the videos of the batch it was rendering; ``split``, ``epoch`` (0-based),
    ``batch`` (1-based) and ``num_batches`` say where. ``str(err)`` is one line.
    """

    def __init__(self, seconds: float, paths, *, split: str = "train", epoch: int = 0,
                 batch: int = 0, num_batches: int = 0):
        self.seconds, self.paths = float(seconds), [str(p) for p in paths]
        self.split, self.epoch, self.batch, self.num_batches = split, int(epoch), int(batch), int(num_batches)
        where = f"{split} epoch {self.epoch + 1}, batch {self.batch}/{self.num_batches}" \
            if split == "train" else f"{split} batch {self.batch}/{self.num_batches}"
        super().__init__(f"loader stalled: no batch for {self.seconds:g} s (loader.stall_timeout) at "
                         f"{where}, rendering {len(self.paths)} video(s): {', '.join(self.paths)}")
