"""A table-driven sweep of bad inputs and faults: each case says how to make it, what to run and how it must end."""
