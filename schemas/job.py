"""Job specs, validated at the edge (CLI flags or YAML). No I/O happens inside validation: whether a
path exists is checked by the code that opens it, so a spec can be built and checked anywhere."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

# Input tokens per shard (the unit of work, commit and resume). Each shard pays ~0.15 s that overlaps
# nothing (worker tokenisation, the last block's write, Parquet + commit): noise against the ~30 s a
# 64k-token MiniLM shard takes on 2 CPU cores, and still small against the ~1-2 s it takes a 1B model
# on one GPU. A killed worker loses at most one shard.
DEFAULT_SHARD_TOKENS = 65536
# Tokens per forward pass (padding included): keeps a batch's activations (layers x tokens x d) to a
# few hundred MB for models up to d=1024, and is large enough that CPU matmuls are efficient.
DEFAULT_BATCH_TOKENS = 4096

Variant = Literal["base", "repeat", "prompt"]
SourceFormat = Literal["auto", "text", "wic", "conllu"]
StoredDtype = Literal["float32", "float16"]
ModelDtype = Literal["auto", "float32", "bfloat16", "float16"]


class ExtractSpec(BaseModel):
    """Everything that decides what an extraction writes (plus how it runs: device, workers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="local model directory, .gguf file, or hub name (network permitting)")
    data: str = Field(description="a .jsonl/.csv/.parquet file, a WiC directory, or CoNLL-U file(s)")
    out: str = Field(description="the store to write (a local path or fsspec URL)")
    format: SourceFormat = "auto"
    text_column: str = "text"
    words_column: str | None = None
    layers: list[int] | Literal["all"] = "all"
    dtype: StoredDtype = "float32"
    model_dtype: ModelDtype = "auto"
    variant: Variant = "base"
    keep: Literal["all", "targets"] = "all"
    batch_tokens: int = Field(DEFAULT_BATCH_TOKENS, ge=1)
    max_length: int | None = Field(None, ge=1, description="default: the model's own limit")
    shard_tokens: int = Field(DEFAULT_SHARD_TOKENS, ge=1)
    chunk_rows: int | None = Field(None, ge=1, description="default: ~4 MiB uncompressed per chunk")
    codec: Literal["blosc-lz4", "zstd", "none"] = "blosc-lz4"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    padding_side: Literal["auto", "left", "right"] = "auto"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    overwrite: bool = False
    limit: int | None = Field(None, ge=1, description="only the first N examples (smoke runs)")

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, v):
        # Only turns the CLI's string form into a list; the values are checked after type validation,
        # so a non-integer entry (`layers: [a]`) is a validation error, not a TypeError in here.
        if isinstance(v, str) and v != "all":
            try:
                v = [int(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"layers must be 'all' or comma-separated integers, got {v!r}")
        return v

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("layers is empty")
            if any(x < 0 for x in v):
                raise ValueError("layer indices are HF hidden_states indices and must be >= 0")
            v = sorted(set(v))
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.variant == "prompt" and self.format == "conllu":
            raise ValueError("the prompt variant needs a target word; CoNLL-U sources have none")
        return self

    def fingerprint_fields(self) -> dict:
        """The fields that change stored values or the shard plan. Resuming a store requires these to
        match; device, workers, batch size and padding side only change speed (and float rounding:
        each commit record notes them, with the torch and transformers versions, so a store mixing them
        says so)."""
        return self.model_dump(
            include={"format", "text_column", "words_column", "layers", "dtype", "model_dtype",
                     "variant", "keep", "max_length", "shard_tokens", "chunk_rows", "codec", "limit"}
        )


class ProbeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["wic", "polar", "linear"]
    options: dict = Field(default_factory=dict)


class BatchJobSpec(BaseModel):
    """`layerprobe run JOB.yaml`: every model x dataset x variant is extracted into
    ROOT/<model>/<dataset>/<variant>.zarr, then the listed probes run on each store."""

    model_config = ConfigDict(extra="forbid")

    output: str
    models: list[str] = Field(min_length=1)
    datasets: list[str] = Field(min_length=1)
    variants: list[Variant] = Field(default_factory=lambda: ["base"], min_length=1)
    layers: list[StrictInt] | Literal["all"] = "all"  # strict, as the counts below: `[yes]` is no layer
    dtype: StoredDtype = "float32"
    keep: Literal["all", "targets"] = "all"
    format: SourceFormat = "auto"
    text_column: str = "text"
    # Counts are strict integers: YAML turns `workers: yes` into True and pydantic would take that
    # as 1, and `limit: "10"` or `2.0` are typos, not numbers; `layerprobe extract`'s argparse
    # (type=int) refuses all of these too.
    workers: int | None = Field(None, ge=1, strict=True, description="default: one per GPU in the cluster, else 1; "
                                "set it on autoscaling clusters that start with no GPU nodes")
    batch_tokens: int = Field(DEFAULT_BATCH_TOKENS, ge=1, strict=True)
    shard_tokens: int = Field(DEFAULT_SHARD_TOKENS, ge=1, strict=True)
    max_length: int | None = Field(None, ge=1, strict=True)
    model_dtype: ModelDtype = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    codec: Literal["blosc-lz4", "zstd", "none"] = "blosc-lz4"
    trust_remote_code: bool = False
    limit: int | None = Field(None, ge=1, strict=True)
    probes: list[ProbeSpec] = Field(default_factory=list)

    @field_validator("probes", mode="before")
    @classmethod
    def _probe_shorthand(cls, v):
        # `probes: [wic]` is shorthand for `probes: [{name: wic}]`.
        if isinstance(v, list):
            return [{"name": p} if isinstance(p, str) else p for p in v]
        return v

    @field_validator("layers", mode="before")
    @classmethod
    def _parse_layers(cls, v):
        return ExtractSpec._parse_layers(v)

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v):
        return ExtractSpec._check_layers(v)

    @model_validator(mode="after")
    def _check(self):
        # The same rule ExtractSpec applies per store, checked once here so the job is refused before
        # the other combinations spend their extraction time.
        if "prompt" in self.variants and self.format == "conllu":
            raise ValueError("the prompt variant needs a target word; CoNLL-U sources have none")
        return self
