"""Training loop, batched scoring and the on-disk predictions store."""
