"""layerprobe: every layer's token activations into chunked Zarr stores, for probes that never
reload the model.

Layer naming, used everywhere: HF `hidden_states` indexing. Layer 0 is the embedding output (what
the first block sees), layer i is the output of block i, and the last layer is exactly
`model(..., output_hidden_states=True).hidden_states[-1]` (for most decoders that includes the final
norm). The static embedding table (`static_embeddings`) is the input-embedding matrix itself,
before positions or context.

Importing this package imports no torch, transformers or ray: those load lazily where needed.
"""

__version__ = "0.1.0"
