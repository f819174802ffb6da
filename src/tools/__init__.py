"""Command-line tools: checkpoint conversion, model info, dataset checks."""
