"""The official Python MCP client against a FastMCP server protected by
AgentAuthProvider: discovery from the 401, dynamic registration, the code
flow with PKCE through agentauth's real sign-in and consent pages (driven
as forms), token, tool call, a 403 insufficient_scope the client steps up
from (a second consent), refresh."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

from consent import approve
from mcp_helpers import Served
from test_fastmcp import Memory, make_app

REDIRECT = "http://127.0.0.1:9/callback"  # never contacted: the form driver stops at it


@pytest.mark.anyio
async def test_code_flow_consent_tool_call_refresh(server):
    storage = Memory()
    codes: asyncio.Queue = asyncio.Queue()
    grants: list[str] = []

    async def redirect_handler(url: str) -> None:
        await codes.put(await approve(url, "alice", "correct horse battery staple", REDIRECT))

    async def callback_handler() -> AuthorizationCodeResult:
        p = await codes.get()
        return AuthorizationCodeResult(code=p["code"], state=p.get("state"), iss=p.get("iss"))

    async def log(response):
        req = response.request
        if req.method == "POST" and req.url.path == "/token":
            grants.append(dict(x.split("=", 1) for x in req.content.decode().split("&"))["grant_type"])

    provider = OAuthClientProvider(
        server_url=server.resource,
        client_metadata=OAuthClientMetadata(client_name="py sdk test", redirect_uris=[REDIRECT],
                                            grant_types=["authorization_code", "refresh_token"],
                                            response_types=["code"], token_endpoint_auth_method="none"),
        storage=storage, redirect_handler=redirect_handler, callback_handler=callback_handler)
    with Served(make_app(server, tool_scopes={"admin_echo": ["tools:admin"]}), server.mcp_port):
        async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [log]}) as http:
            async with Client(streamable_http_client(server.resource, http_client=http)) as client:
                me = json.loads((await client.call_tool("whoami", {})).content[0].text)
                # 403 insufficient_scope naming tools:read tools:admin: the
                # SDK authorizes again for both and retries, in this one call.
                echo = (await client.call_tool("admin_echo", {"text": "stepped up"})).content[0].text
                first = storage.tokens.access_token
                # The SDK refreshes only when its own record says the token
                # expired (python-sdk#1318): move that record back.
                provider.context.token_expiry_time = time.time() - 1
                again = json.loads((await client.call_tool("whoami", {})).content[0].text)
    assert me["scopes"] == ["tools:read"] and me["sub"] == again["sub"]
    assert storage.tokens.access_token != first
    assert echo == "stepped up (scopes tools:read tools:admin)"
    assert grants == ["authorization_code", "authorization_code", "refresh_token"]
