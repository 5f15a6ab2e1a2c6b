"""medad.protocols."""
