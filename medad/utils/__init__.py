"""Small helpers shared by every concern: atomic file writes, hashing, seeding."""
