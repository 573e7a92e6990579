"""Features: one set of definitions, a point-in-time batch builder and an online builder."""
