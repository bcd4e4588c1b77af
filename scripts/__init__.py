"""Scripts run from the repository root as ``python -m scripts.<name>`` (the chaos soak, ...)."""
