"""medad.models."""
