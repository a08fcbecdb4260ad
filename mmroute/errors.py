"""One exception hierarchy, so callers (and the CLI) can tell bad input from bad config from faults.

Every message names what was wrong and, where it helps, what to do about it; the CLI prints
``str(error)`` as a single line.
"""

from __future__ import annotations


class MMRouteError(Exception):
    """Base class of every error mmroute raises on purpose."""


class InvalidInputError(MMRouteError, ValueError):
    """A query, message or image handed to mmroute cannot be used."""


class ImageError(InvalidInputError):
    """An image could not be read, decoded or fetched safely."""


class DataFormatError(InvalidInputError):
    """A judgments/outcomes/pool file (or one line of it) is malformed."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


class ConfigError(MMRouteError, ValueError):
    """A configuration (pool, encoder spec, policy parameter) is invalid."""


class NoEligibleModelError(MMRouteError):
    """Hard filters removed every candidate model for a query."""


class CheckpointError(MMRouteError):
    """A saved router cannot be loaded (missing, truncated, tampered, newer format)."""


class FeatureSpecMismatchError(CheckpointError):
    """A saved router was trained on features other than the configured encoders produce."""


class WeightsNotFoundError(MMRouteError):
    """Encoder weights are not available locally and cannot be downloaded."""


class ProviderError(MMRouteError):
    """Every attempt to get an answer from an LLM provider failed."""

    def __init__(self, message: str, attempts: list | None = None):
        super().__init__(message)
        self.attempts = list(attempts or [])


class RoutingWarning(UserWarning):
    """Something will route worse than the user probably expects (unknown prices, untrained names)."""


class UnknownPricesWarning(RoutingWarning):
    """Models whose prices neither LiteLLM nor the pool file know count as $0: the router cannot
    trade cost for them (one warning for all of them; ``mmroute train`` prints it as an error)."""


class ProviderConfigError(ConfigError, ProviderError):
    """No candidate could be called because of how the providers are set up (a missing API key):
    not a provider fault, so it is neither retried nor counted against a model's circuit."""

    def __init__(self, message: str, attempts: list | None = None):
        ProviderError.__init__(self, message, attempts)
