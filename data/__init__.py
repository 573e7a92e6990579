"""The raw world: table schemas, loaders for a shop's own files, and the world generator."""
