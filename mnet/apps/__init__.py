"""Applications built on the MultiOS stack (the socket guide's exercises and servers)."""
