"""multios-net's application package, on top of every other one.

`mnet.cli` is the `mnet` command (its subcommands, the demo in `mnet.demo`),
`mnet.services` the stack's services that `mnet stack --serve` runs, and
`mnet.pytest_plugin` the pytest fixtures for driver integration tests
(installed as the `mnet` plugin). Nothing but tests imports this package.
"""
