"""medad.metrics."""
