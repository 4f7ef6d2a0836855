"""The socket guide's applications, each a `--serve` kind of `mnet stack` (mnet/services/applications.py)."""
