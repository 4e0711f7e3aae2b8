"""The driver's progress bar (tokens/s and ETA over input tokens, shards done in the postfix)."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total_tokens: int, total_shards: int, enabled: bool = True):
        self.total_shards = total_shards
        self.shards = 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, desc="extract",
                            file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
            self.bar.set_postfix_str(f"shards 0/{total_shards}")

    def shard_done(self, input_tokens: int) -> None:
        self.shards += 1
        if self.bar is not None:
            self.bar.update(input_tokens)
            self.bar.set_postfix_str(f"shards {self.shards}/{self.total_shards}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
