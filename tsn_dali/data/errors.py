"""Errors raised by the data path. Each names the file and what went wrong, on one line."""


class VideoDecodeError(RuntimeError):
    """A video that could not be decoded (missing, truncated, not a video, no decoder)."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")
