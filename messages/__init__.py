"""The messages service: a stub that answers "not implemented yet"."""
