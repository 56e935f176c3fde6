"""A FastMCP server protected by AgentAuthProvider, reached by the official
Python MCP client (discovery from the 401, AS metadata, token, tool call),
and by an agent with a DPoP-bound token through the same client."""

from __future__ import annotations

import json

import httpx
import httpx2
import pytest
from fastmcp import FastMCP
from fastmcp.server.dependencies import get_access_token
from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from agentauth import ResourceVerifier
from agentauth.agent import DPoPAuth
from agentauth.mcp import AgentAuthProvider, current

from mcp_helpers import Served


class Memory:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, info):
        self.client_info = info


def make_app(server, tool_scopes=None, **verifier_kw):
    verifier = ResourceVerifier(server.issuer, server.resource, **verifier_kw)
    mcp = FastMCP("py-notes", auth=AgentAuthProvider(verifier, required_scopes=["tools:read"],
                                                      scopes_supported=["tools:read", "tools:admin"],
                                                      tool_scopes=tool_scopes))
    if tool_scopes:

        @mcp.tool
        def admin_echo(text: str) -> str:
            return f"{text} (scopes {' '.join(get_access_token().scopes)})"

    @mcp.tool
    def whoami() -> str:
        token = get_access_token()
        c = token.claims
        return json.dumps({"sub": c["sub"], "client_id": token.client_id, "scopes": token.scopes,
                           "jkt": (c.get("cnf") or {}).get("jkt"), "act": c.get("act"),
                           "kind": current().kind if current() else None})

    return mcp.http_app(path="/mcp", stateless_http=True, json_response=True)


@pytest.fixture(scope="module")
def fastmcp_server(server):
    with Served(make_app(server), server.mcp_port):
        yield server.resource


def test_challenge_and_metadata(server, fastmcp_server):
    r = httpx.post(fastmcp_server, json={})
    assert r.status_code == 401
    challenges = r.headers.get_list("www-authenticate")
    meta_url = f"http://127.0.0.1:{server.mcp_port}/.well-known/oauth-protected-resource/mcp"
    assert challenges[0].startswith(f'Bearer realm="agentauth", resource_metadata="{meta_url}"')
    assert challenges[1].startswith("DPoP ") and "algs=" in challenges[1]
    meta = httpx.get(meta_url).json()
    # The issuer byte for byte (no trailing slash added).
    assert meta["authorization_servers"] == [server.issuer]
    assert meta["resource"] == server.resource
    assert meta["scopes_supported"] == ["tools:read", "tools:admin"]


@pytest.mark.anyio
async def test_official_client_with_client_credentials(server, fastmcp_server):
    c = server.client("mcp-cc", "tools:read")
    storage = Memory()
    provider = ClientCredentialsOAuthProvider(server_url=fastmcp_server, storage=storage, client_id=c["client_id"],
                                              client_secret=c["client_secret"], scope="tools:read", issuer=server.issuer)
    seen = []

    async def log(response):
        seen.append((response.request.method, str(response.request.url), response.status_code))

    async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [log]}) as http:
        async with Client(streamable_http_client(fastmcp_server, http_client=http)) as client:
            tools = await client.list_tools()
            assert [t.name for t in tools.tools] == ["whoami"]
            result = await client.call_tool("whoami", {})
    me = json.loads(result.content[0].text)
    assert me["client_id"] == c["client_id"] and me["scopes"] == ["tools:read"] and me["jkt"] is None
    urls = [u for _, u, _ in seen]
    # Discovery went through our metadata, then the AS's.
    assert any("/.well-known/oauth-protected-resource/mcp" in u for u in urls)
    assert any(u.endswith("/token") for u in urls)


@pytest.mark.anyio
async def test_agent_dpop_through_official_client(server, agent, fastmcp_server):
    token = agent.client_credentials(resource=server.resource, scope="tools:read")
    assert token["token_type"] == "DPoP"
    async with httpx2.AsyncClient(auth=DPoPAuth(agent.key, token["access_token"])) as http:
        async with Client(streamable_http_client(fastmcp_server, http_client=http)) as client:
            result = await client.call_tool("whoami", {})
    me = json.loads(result.content[0].text)
    assert me["sub"] == agent.client_id and me["jkt"] == agent.key.jkt
    assert me["kind"] == "access", "agentauth.mcp.current() is visible in the tool"


def test_negative_over_http(server, agent, fastmcp_server):
    url = fastmcp_server
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    hdrs = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}
    token = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
    proof = agent.key.dpop_proof("POST", url, token)
    ok = httpx.post(url, json=body, headers=dict(hdrs, authorization=f"DPoP {token}", dpop=proof))
    assert ok.status_code == 200, ok.text
    # The same proof again: a replay.
    again = httpx.post(url, json=body, headers=dict(hdrs, authorization=f"DPoP {token}", dpop=proof))
    assert again.status_code == 401 and 'error="invalid_dpop_proof"' in again.headers["www-authenticate"]
    # The bound token as a bearer token: refused, though FastMCP's backend would take it.
    bearer = httpx.post(url, json=body, headers=dict(hdrs, authorization=f"Bearer {token}"))
    assert bearer.status_code == 401 and "DPoP scheme" in bearer.headers["www-authenticate"]
    # A passport (this verifier does not accept them).
    passport = agent.passport(audience=server.resource)["access_token"]
    r = httpx.post(url, json=body, headers=dict(hdrs, authorization=f"DPoP {passport}",
                                                dpop=agent.key.dpop_proof("POST", url, passport)))
    assert r.status_code == 401 and "passport is not an access token" in r.headers["www-authenticate"]
    # A token for another resource; a token without the required scope.
    other = server.bearer(resource=server.other_resource)["access_token"]
    r = httpx.post(url, json=body, headers=dict(hdrs, authorization=f"Bearer {other}"))
    assert r.status_code == 401 and "another resource" in r.headers["www-authenticate"]
    admin_only = server.bearer(scope="tools:admin")["access_token"]
    r = httpx.post(url, json=body, headers=dict(hdrs, authorization=f"Bearer {admin_only}"))
    assert r.status_code == 403 and 'scope="tools:admin tools:read"' in r.headers["www-authenticate"]

