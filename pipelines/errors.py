"""Errors whose message is meant for the user: the UI and the API show them as they are."""


class EaselError(Exception):
    """Base of every error a user should read (never a traceback)."""


class RequestError(EaselError, ValueError):
    """A generation request with a value the engine cannot use; ``field`` names the request field it is about,
    so an API can point at the value to change."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ModelError(EaselError):
    """A model that cannot be found, loaded or used."""
