"""The applications `mnet stack --serve` runs besides the built-in services (one package each)."""
