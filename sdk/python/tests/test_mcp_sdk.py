"""The official `mcp` SDK's own server (MCPServer) with AgentAuthTokenVerifier
and AgentAuthMiddleware around its app, reached by the official client."""

from __future__ import annotations

import json

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

from agentauth import ResourceVerifier
from agentauth.agent import DPoPAuth
from agentauth.mcp import AgentAuthMiddleware, AgentAuthTokenVerifier

from mcp_helpers import Served
from test_fastmcp import Memory


def make_app(server):
    verifier = ResourceVerifier(server.issuer, server.resource)
    mcp = MCPServer(
        "py-notes-sdk",
        token_verifier=AgentAuthTokenVerifier(verifier),
        auth=AuthSettings(issuer_url=server.issuer, resource_server_url=server.resource,
                          required_scopes=["tools:read"], validate_token_resource=True),
    )

    @mcp.tool()
    def whoami() -> str:
        token = get_access_token()
        return json.dumps({"client_id": token.client_id, "subject": token.subject,
                           "jkt": ((token.claims or {}).get("cnf") or {}).get("jkt")})

    app = mcp.streamable_http_app(stateless_http=True, json_response=True)
    return AgentAuthMiddleware(app, verifier, scopes=["tools:read"])


@pytest.fixture(scope="module")
def sdk_server(server):
    with Served(make_app(server), server.mcp_port):
        yield server.resource


def test_sdk_metadata_issuer(server, sdk_server):
    meta = httpx.get(f"http://127.0.0.1:{server.mcp_port}/.well-known/oauth-protected-resource/mcp").json()
    assert meta["authorization_servers"] == [server.issuer], meta


@pytest.mark.anyio
async def test_sdk_server_official_client_and_agent(server, agent, sdk_server):
    c = server.client("mcp-sdk-cc", "tools:read")
    provider = ClientCredentialsOAuthProvider(server_url=sdk_server, storage=Memory(), client_id=c["client_id"],
                                              client_secret=c["client_secret"], scope="tools:read", issuer=server.issuer)
    async with httpx2.AsyncClient(auth=provider) as http:
        async with Client(streamable_http_client(sdk_server, http_client=http)) as client:
            me = json.loads((await client.call_tool("whoami", {})).content[0].text)
    assert me["client_id"] == c["client_id"] and me["jkt"] is None
    token = agent.client_credentials(resource=server.resource, scope="tools:read")
    async with httpx2.AsyncClient(auth=DPoPAuth(agent.key, token["access_token"])) as http:
        async with Client(streamable_http_client(sdk_server, http_client=http)) as client:
            me = json.loads((await client.call_tool("whoami", {})).content[0].text)
    assert me["subject"] == agent.client_id and me["jkt"] == agent.key.jkt
    # Without our middleware the SDK's backend would take the bound token as
    # a bearer token; with it, refused.
    r = httpx.post(sdk_server, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 401


@pytest.mark.anyio
async def test_verify_token_alone_refuses_bound_tokens(server, agent):
    """AgentAuthTokenVerifier used without the middleware: bearer tokens
    pass, DPoP-bound ones cannot (their proof is not visible there)."""
    v = AgentAuthTokenVerifier(ResourceVerifier(server.issuer, server.resource))
    assert (await v.verify_token(server.bearer()["access_token"])).scopes == ["tools:read"]
    bound = agent.client_credentials(resource=server.resource, scope="tools:read")["access_token"]
    assert await v.verify_token(bound) is None
    assert await v.verify_token(agent.passport(audience=server.resource)["access_token"]) is None
