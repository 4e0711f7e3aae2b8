"""Stores: `open_store` reads (no torch/transformers/ray); `pipeline.store.writer` writes."""

from pipeline.store.reader import Store, open_store

__all__ = ["Store", "open_store"]
