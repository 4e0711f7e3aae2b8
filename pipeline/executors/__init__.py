"""Plan, then execute: a deterministic shard plan, run by the local or the Ray executor."""
