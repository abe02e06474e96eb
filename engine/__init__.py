"""The EMM service engine: domain operations, protocols, actors, configuration and store."""

__version__ = "0.1.0"
