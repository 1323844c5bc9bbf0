"""A client of the control API, over the home's unix socket, with the home's token."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..errors import AuthError, CoboxError, DaemonNotRunningError
from ..paths import Home


class ApiError(CoboxError):
    """The daemon answered with an error."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Client:
    def __init__(self, home: Home, *, timeout: float = 30.0) -> None:
        self.home = home
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        if not self.home.api_socket.exists() or not self.home.token.exists():
            raise DaemonNotRunningError(
                f"no cobox daemon is running for {self.home.root} (start one with `cobox start`)")
        token = self.home.token.read_text().strip()
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self.home.api_socket)),
            headers={"Authorization": f"Bearer {token}"}, timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                      **params: str) -> Any:
        assert self._session is not None
        try:
            async with self._session.request(method, f"http://cobox{path}", json=body, params=params) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    err = (data or {}).get("error", {})
                    if r.status == 401:
                        raise AuthError(err.get("message", "unauthorized"))
                    raise ApiError(r.status, err.get("code", "error"), err.get("message", f"HTTP {r.status}"))
                return data
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunningError(
                f"no cobox daemon is running for {self.home.root} (start one with `cobox start`)") from None

    async def stream(self, path: str, **params: str) -> AsyncIterator[dict[str, Any]]:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        try:
            async with self._session.get(f"http://cobox{path}", params=params, timeout=timeout) as r:
                if r.status >= 400:
                    data = await r.json(content_type=None)
                    err = (data or {}).get("error", {})
                    raise ApiError(r.status, err.get("code", "error"), err.get("message", f"HTTP {r.status}"))
                async for line in r.content:
                    if line.strip():  # empty lines are the server's heartbeats
                        yield json.loads(line)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunningError(f"the cobox daemon for {self.home.root} went away") from None

    async def get(self, path: str, **params: str) -> Any:
        return await self.request("GET", path, **params)

    async def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return await self.request("POST", path, body or {})

    async def delete(self, path: str) -> Any:
        return await self.request("DELETE", path)
