"""Event store migration scripts, oldest first."""
