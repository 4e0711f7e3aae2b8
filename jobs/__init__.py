"""Probe jobs: read a layerprobe store (never the model) and score every layer.

Modules: `wic` (Word-in-Context similarity), `polar` (polar/structural syntax probes), `linear`
(logistic-regression probes with control tasks), shared helpers in `splits`, `words`, `results`,
`storeio`, and the argparse wiring in `cli`. Importing this package imports nothing heavy; torch is
imported lazily inside polar training only.
"""
