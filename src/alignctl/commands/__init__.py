"""Commands that are not pipeline stages (presets, validate)."""
