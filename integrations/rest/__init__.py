"""The declarative REST integration, driven by a source section of sluice.toml."""
