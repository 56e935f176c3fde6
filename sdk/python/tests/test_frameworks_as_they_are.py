"""FastMCP's own JWT verifier inside its RemoteAuthProvider against
agentauth, with no package of ours: it works for bearer tokens, and these
tests pin the pitfalls the package exists for."""

from __future__ import annotations

import json

import httpx
import httpx2
import pytest
from fastmcp import FastMCP
from fastmcp.server.auth import RemoteAuthProvider
from fastmcp.server.auth.providers.jwt import JWTVerifier
from fastmcp.server.dependencies import get_access_token
from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from pydantic import AnyHttpUrl

from mcp_helpers import Served
from test_fastmcp import Memory


def make_app(server, authorization_server):
    verifier = JWTVerifier(jwks_uri=server.issuer + "/jwks.json", issuer=server.issuer, audience=server.resource,
                           algorithm="RS256", required_scopes=["tools:read"])
    auth = RemoteAuthProvider(token_verifier=verifier, authorization_servers=[authorization_server],
                              base_url=f"http://127.0.0.1:{server.mcp_port}", scopes_supported=["tools:read"])
    mcp = FastMCP("builtin", auth=auth)

    @mcp.tool
    def whoami() -> str:
        return json.dumps(get_access_token().claims)

    return mcp.http_app(path="/mcp", stateless_http=True, json_response=True)


async def call_whoami(server, client_id, secret):
    provider = ClientCredentialsOAuthProvider(server_url=server.resource, storage=Memory(), client_id=client_id,
                                              client_secret=secret, scope="tools:read", issuer=server.issuer)
    async with httpx2.AsyncClient(auth=provider) as http:
        async with Client(streamable_http_client(server.resource, http_client=http)) as client:
            return json.loads((await client.call_tool("whoami", {})).content[0].text)


@pytest.mark.anyio
async def test_builtin_verifier_with_documented_anyhttpurl(server):
    """The documented `AnyHttpUrl(issuer)` gains a trailing slash in the
    RFC 9728 metadata."""
    with Served(make_app(server, AnyHttpUrl(server.issuer)), server.mcp_port):
        meta = httpx.get(f"http://127.0.0.1:{server.mcp_port}/.well-known/oauth-protected-resource/mcp").json()
        assert meta["authorization_servers"] == [server.issuer + "/"]
        c = server.client("builtin-slash", "tools:read")
        try:
            await call_whoami(server, c["client_id"], c["client_secret"])
            outcome = "ok"
        except BaseException as e:  # noqa: BLE001 - the SDK raises exception groups
            outcome = repr(e)
        # The official client compares issuers exactly (RFC 8414 §3.3).
        assert "issuer mismatch" in outcome, outcome


@pytest.mark.anyio
async def test_builtin_verifier_bearer_works_but_takes_passports(server, agent):
    with Served(make_app(server, server.issuer), server.mcp_port):
        meta = httpx.get(f"http://127.0.0.1:{server.mcp_port}/.well-known/oauth-protected-resource/mcp").json()
        c = server.client("builtin", "tools:read")
        claims = await call_whoami(server, c["client_id"], c["client_secret"])
        assert claims["client_id"] == c["client_id"]
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        hdrs = {"accept": "application/json, text/event-stream"}
        # Pitfall: no typ check. A passport whose aud names the resource,
        # sent as a plain bearer token (no proof of its key), is taken as an
        # access token; its own `scope` claim becomes a grant.
        passport = agent.passport(audience=server.resource)["access_token"]
        r = httpx.post(server.resource, json=body, headers=dict(hdrs, authorization=f"Bearer {passport}"))
        assert r.status_code == 200, "FastMCP's JWTVerifier accepts a passport as an access token"
        # Pitfall: a DPoP-bound token is taken as a bearer token (no proof),
        # and the DPoP scheme itself is refused.
        bound = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
        r = httpx.post(server.resource, json=body, headers=dict(hdrs, authorization=f"Bearer {bound}"))
        assert r.status_code == 200, "a stolen DPoP-bound token works as a bearer token"
        r = httpx.post(server.resource, json=body, headers=dict(hdrs, authorization=f"DPoP {bound}",
                                                                 dpop=agent.key.dpop_proof("POST", server.resource, bound)))
        assert r.status_code == 401
    # A plain string keeps the issuer as it is.
    assert meta["authorization_servers"] == [server.issuer]
