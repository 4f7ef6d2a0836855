"""Applications that run on the MultiOS stack (each in its own package), started by
`mnet stack --serve` through mnet/services/applications.py."""
