"""Errors a user can fix. The CLI prints their message on one line and exits non-zero; anything
else is a bug and keeps its traceback."""

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message' (at most 300 characters), without the ANSI colours Ray
    puts in remote tracebacks: another library's exception quoted inside one of ours."""
    text = _ANSI.sub("", str(exc)).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line[:300]}" if line else type(exc).__name__


class LayerprobeError(Exception):
    """Bad input or a refused operation, with a message that says what to do."""

    exit_code = 2


class StoreError(LayerprobeError):
    """A store is missing, incomplete, corrupt, or from another configuration."""


class OutTaken(StoreError):
    """The output path holds something this run may not write into: `kind` is "not_a_store" or
    "other_config", `detail` what differs. The message's advice is the CLI's (its flags); callers
    with other means, such as a job file, give their own from `kind` and `detail`."""

    def __init__(self, message: str, *, kind: str, detail: str = ""):
        super().__init__(message)
        self.kind = kind
        self.detail = detail
