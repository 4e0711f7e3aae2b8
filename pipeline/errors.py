"""Errors a user can fix. The CLI prints their message on one line and exits non-zero; anything
else is a bug and keeps its traceback."""


class LayerprobeError(Exception):
    """Bad input or a refused operation, with a message that says what to do."""

    exit_code = 2


class StoreError(LayerprobeError):
    """A store is missing, incomplete, corrupt, or from another configuration."""
