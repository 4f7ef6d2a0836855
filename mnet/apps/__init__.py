"""The socket guide's applications, written against the MultiOS stack (most are `--serve` kinds of `mnet stack`: mnet/services/applications.py)."""
