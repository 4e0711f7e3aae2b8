"""The only part of layerprobe that imports transformers: variants, tokenisation with offsets, word
alignment, token-budget batching and the forward pass. `variants`, `alignment` and `batching` are
pure (no torch) so they can be tested without a model."""
