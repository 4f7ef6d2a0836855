"""A TCP load balancer on the stack: `mnet stack --serve lb:PORT,backend=IP:PORT,...` (docs/loadbalancer.md).

``balancer`` chooses backends and tracks their health (sans-IO), ``options``
reads the service's options, ``relay`` moves one client's bytes to and from
its backend, ``service`` runs them all on one event loop.
"""
