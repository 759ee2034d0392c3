"""One module per stage, named after its subcommand (style.md)."""
