"""medad.data."""
