"""The official Python MCP SDK (`mcp`, PyPI) as a user of it writes a client,
given only the MCP server's URL; run by test/sdk.test.mjs.

    mcp_client.py code URL
        OAuthClientProvider: discovery, dynamic registration, the code flow
        with PKCE (the consent is approved by the test in Chromium: the URL
        goes out as an `authorize` event, the redirect comes back to a
        loopback listener here), whoami, the admin tool (403
        insufficient_scope, step-up, retry), and a refresh.
    mcp_client.py client-credentials URL CLIENT_ID CLIENT_SECRET ISSUER
        ClientCredentialsOAuthProvider: a token with no user, whoami, and the
        admin tool refused.

Every line on stdout is a JSON event for the test to check: `authorize`,
`http` (each exchange the SDK made, tokens' grant types included), `tool`
(a result), `tools`, `tokens`, `error`, `done`.
"""

import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.client import Client
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, OAuthTokenError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


class MemoryStorage:
    """The SDK's TokenStorage, kept in memory."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class Callback:
    """A loopback listener for the authorization redirect (RFC 8252 §7.3)."""

    async def start(self):
        self.queue = asyncio.Queue()
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/callback"
        return self

    async def _handle(self, reader, writer):
        request_line = (await reader.readline()).decode()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        target = request_line.split(" ")[1]
        body = b"done"
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 4\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()
        writer.close()
        if urlsplit(target).path == "/callback":
            await self.queue.put({k: v[0] for k, v in parse_qs(urlsplit(target).query).items()})

    async def redirect_handler(self, url: str) -> None:
        emit("authorize", url=url)

    async def callback_handler(self) -> AuthorizationCodeResult:
        params = await self.queue.get()
        return AuthorizationCodeResult(code=params["code"], state=params.get("state"), iss=params.get("iss"))


async def log_response(response: httpx2.Response) -> None:
    request = response.request
    form = {}
    if request.method == "POST" and request.url.path == "/token":
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    emit(
        "http",
        method=request.method,
        url=str(request.url),
        status=response.status_code,
        challenge=response.headers.get("www-authenticate"),
        authorization=request.headers.get("authorization", "").split(" ")[0] or None,
        grant_type=form.get("grant_type"),
        scope=form.get("scope"),
    )


def tool_event(name, result):
    emit("tool", name=name, is_error=bool(result.is_error), text=result.content[0].text if result.content else None)


def tokens_event(storage):
    t = storage.tokens
    emit("tokens", access_token=t.access_token, refresh_token=t.refresh_token)


async def code_flow(url):
    callback = await Callback().start()
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="MCP Python SDK test client",
            redirect_uris=[callback.url],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=callback.redirect_handler,
        callback_handler=callback.callback_handler,
    )
    async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [log_response]}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            emit("tools", names=sorted(t.name for t in tools.tools))
            tool_event("whoami", await client.call_tool("whoami", {}))
            tokens_event(storage)
            # 403 insufficient_scope: the SDK asks for the wider scope (a
            # second consent) and retries, inside this one call.
            tool_event("admin_echo", await client.call_tool("admin_echo", {"text": "stepped up"}))
            tokens_event(storage)
            # The SDK refreshes only when its own record says the token has
            # expired (on a 401 it authorizes again, python-sdk#1318): move
            # that record back rather than wait out agentauth's shortest
            # lifetime (60 s).
            provider.context.token_expiry_time = time.time() - 1
            tool_event("whoami", await client.call_tool("whoami", {}))
            tokens_event(storage)


async def client_credentials(url, client_id, client_secret, issuer):
    storage = MemoryStorage()
    provider = ClientCredentialsOAuthProvider(
        server_url=url,
        storage=storage,
        client_id=client_id,
        client_secret=client_secret,
        scope="mcp",
        issuer=issuer,
    )
    try:
        async with httpx2.AsyncClient(auth=provider, event_hooks={"response": [log_response]}) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                tool_event("whoami", await client.call_tool("whoami", {}))
                tokens_event(storage)
                # The client was made for `mcp` only: the step-up's token request fails.
                tool_event("admin_echo", await client.call_tool("admin_echo", {"text": "no"}))
    # The SDK fails the connection, not the call: the error leaves its task group.
    except* OAuthTokenError as group:
        error = group
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        emit("error", name="admin_echo", message=str(error))


async def main(argv):
    if argv[0] == "code":
        await code_flow(argv[1])
    elif argv[0] == "client-credentials":
        await client_credentials(*argv[1:5])
    else:
        raise SystemExit(f"unknown mode {argv[0]}")
    emit("done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
