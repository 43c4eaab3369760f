"""A console client for tests: what a browser does that matters for the console's pages."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import httpx

from .html import Element, parse
from .lifecycle import Lifecycle


class Browser:
    """What a browser does that matters here: keeps cookies (all of them: the harness
    speaks plain http, where a real browser would drop Secure ones), sends Origin on
    POST, does not follow redirects."""

    def __init__(self, base: str, origin: str | None = None) -> None:
        self.base = base
        self.origin = base if origin is None else origin
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []
        self.client = httpx.AsyncClient(base_url=base, timeout=20, follow_redirects=False)

    def _keep(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            self.set_cookies.append(header)
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or morsel.value in ("", '""'):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _headers(self, post: bool) -> dict[str, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if post and self.origin:
            headers["Origin"] = self.origin
        return headers

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        response = await self.client.get(path, headers=self._headers(False), **kw)
        self._keep(response)
        return response

    async def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        response = await self.client.post(path, data=data, headers=self._headers(True))
        self._keep(response)
        return response

    async def sign_in(self, login: str, password: str) -> httpx.Response:
        form = parse((await self.get("/sign-in")).text).testid("sign-in-form")
        token = form.one("input", name="csrf_token").attrs["value"]
        return await self.post(
            "/sign-in", {"login": login, "password": password, "csrf_token": token}
        )

    def csrf(self, page: Element) -> str:
        return page.find_all("input", name="csrf_token")[0].attrs["value"]

    async def close(self) -> None:
        await self.client.aclose()


def console_url(lc: Lifecycle) -> str:
    return lc.services["console"].url
