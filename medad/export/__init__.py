"""medad.export."""
