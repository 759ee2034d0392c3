"""Commands that are not pipeline stages: presets, validate, report, and the docs generator."""
