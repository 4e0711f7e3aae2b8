"""Sharing activation stores: inspect, validate, copy (local <-> any fsspec URL) and export.

    from pipeline.sharing.inspect import inspect_store
    from pipeline.sharing.validate import validate_store
    from pipeline.sharing.copy import copy_store
    from pipeline.sharing.export import export_layer

Everything here reads stores through fsspec and zarr only (no torch/transformers), accepts local
paths and URLs (file://, http(s)://, s3://, ...), and never executes or unpickles store contents:
stores hold JSON, Parquet and Zarr chunks only.
"""
