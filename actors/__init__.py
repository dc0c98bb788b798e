"""Data plane: decoder shards, per-camera streams, analytics rules, clip recording."""
