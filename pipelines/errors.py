"""Errors whose message is meant for the user: the UI and the API show them as they are."""


class EaselError(Exception):
    """Base of every error a user should read (never a traceback)."""


class RequestError(EaselError, ValueError):
    """A generation request with a value the engine cannot use."""


class ModelError(EaselError):
    """A model that cannot be found, loaded or used."""
