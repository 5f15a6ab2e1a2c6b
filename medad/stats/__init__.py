"""medad.stats."""
