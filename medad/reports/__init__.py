"""medad.reports."""
