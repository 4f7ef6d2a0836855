"""The socket guide's applications, written against the MultiOS stack."""
