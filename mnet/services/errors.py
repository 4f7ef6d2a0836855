"""Why a service could not be described or started (the CLI says it in one line)."""


class ServiceError(Exception):
    """A service could not start (its port is taken, the stack is down...)."""


class ServiceSpecError(ServiceError, ValueError):
    """A service description (``kind:PORT[,params]``) that does not parse."""
