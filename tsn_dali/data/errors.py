"""Errors raised by the data path. Each names the file and what went wrong, on one line."""


class VideoDecodeError(RuntimeError):
    """A video that could not be decoded (missing, truncated, not a video, no decoder)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class PipelineError(ValueError):
    """A pipeline file (pipelines/*.yaml) that does not validate.

    ``str(err)`` is one line: ``<file>:<line>: <op[.param]>: <what was expected>``.
    """

    def __init__(self, file: str, key: str, message: str, line=None):
        self.file, self.key, self.line, self.message = str(file), key, line, message
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
