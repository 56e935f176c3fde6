"""Drives agentauth's real sign-in and consent pages as a browser would
(cookies, hidden form fields), stopping at the redirect to the client's
loopback URL; returns its query parameters."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "fields": {}})
        elif tag == "input" and self.forms and a.get("name") and a.get("type") == "hidden":
            self.forms[-1]["fields"][a["name"]] = a.get("value") or ""


def forms(html: str) -> list[dict]:
    p = _Forms()
    p.feed(html)
    return p.forms


async def approve(url: str, username: str, password: str, redirect_prefix: str) -> dict[str, str]:
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    async with httpx.AsyncClient(headers={"origin": origin}) as browser:
        r = await browser.get(url)
        for _ in range(10):
            if r.is_redirect:
                target = urljoin(str(r.url), r.headers["location"])
                if target.startswith(redirect_prefix):
                    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
                r = await browser.get(target)
                continue
            assert r.status_code == 200, (r.status_code, r.text[:500])
            page = forms(r.text)
            login = next((f for f in page if f["action"] == "/login"), None)
            consent = next((f for f in page if f["action"] == "/authorize/decision"), None)
            if login is not None:
                data = dict(login["fields"], username=username, password=password)
                r = await browser.post(urljoin(origin, "/login"), data=data)
            elif consent is not None:
                data = dict(consent["fields"], decision="approve")
                r = await browser.post(urljoin(origin, "/authorize/decision"), data=data)
            else:
                raise AssertionError(f"no form on {r.url}: {r.text[:500]}")
        raise AssertionError("too many steps")


async def approve_backchannel(issuer: str, username: str, password: str, binding: str) -> None:
    """The owner signs in and approves, with her password, the pending
    request of her approvals page whose binding message is `binding`."""
    import asyncio
    import html as html_lib
    import re

    async with httpx.AsyncClient(base_url=issuer, headers={"origin": issuer}) as person:
        page = (await person.get("/login")).text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        r = await person.post("/login", data={"csrf_token": csrf, "username": username, "password": password,
                                               "return_to": "/account"})
        assert r.status_code == 303, r.text
        for _ in range(50):
            page = (await person.get("/account/approvals")).text
            ids = [i for i in re.search(r'data-approvals-live="([^"]*)"', page).group(1).split(",") if i]
            csrf = re.search(r'data-csrf="([^"]+)"', page).group(1)
            for id in ids:
                start = page.index(f'id="request-{id}"')
                section = page[start:page.index("</section>", start)]
                m = re.search(r'<strong class="binding">([^<]*)</strong>', section)
                if m and html_lib.unescape(m.group(1)) == binding:
                    r = await person.post(f"/account/approvals/{id}/approve", data={"csrf_token": csrf, "password": password})
                    assert r.status_code == 303, r.text
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"no pending request {binding!r}")
