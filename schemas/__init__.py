"""Contracts of layerprobe: job specs, the store manifest and the Arrow table schemas.

This package depends on nothing else in the project (pydantic and pyarrow only), so a reader of a
store, a probe job and the extraction workers all agree on one definition.
"""

from schemas.manifest import FORMAT_VERSION, Manifest, ShardPlan, ShardRecord, CommitRecord
from schemas.job import ExtractSpec, BatchJobSpec, ProbeSpec

__all__ = [
    "FORMAT_VERSION",
    "Manifest",
    "ShardPlan",
    "ShardRecord",
    "CommitRecord",
    "ExtractSpec",
    "BatchJobSpec",
    "ProbeSpec",
]
