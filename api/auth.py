"""HTTP Basic authentication for the API (``--api-auth``), independent of the UI's login (``--auth``).

The dependency also names the caller, because progress, interrupt and skip act on the caller's own job only
(A1111 #761: anyone could stop anyone's job): an authenticated caller is its user name, an anonymous one (no
``--api-auth``, so only reachable from this machine unless ``--insecure``) its client address.
"""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic, HTTPBasicCredentials

_basic = HTTPBasic(auto_error=False, description="--api-auth user:password")


class ApiAuth:
    """A FastAPI dependency returning the caller's owner id, or answering 401 for wrong credentials."""

    def __init__(self, users: list[tuple[str, str]] | None = None):
        self.users = [(user.encode(), password.encode()) for user, password in users or ()]

    def check(self, user: str, password: str) -> bool:
        # Compare against every account, so the time taken does not tell which user names exist.
        given = (user.encode(), password.encode())
        found = False
        for name, secret in self.users:
            found |= secrets.compare_digest(given[0], name) & secrets.compare_digest(given[1], secret)
        return found

    async def __call__(self, request: Request,
                       credentials: HTTPBasicCredentials | None = Depends(_basic)) -> str:
        if not self.users:
            return f"client:{request.client.host if request.client else 'unknown'}"
        if credentials is None or not self.check(credentials.username, credentials.password):
            raise HTTPException(401, "Incorrect username or password", headers={"WWW-Authenticate": "Basic"})
        return f"user:{credentials.username}"
