"""The logging service (named so: a top-level ``logging`` package would shadow the standard library)."""
