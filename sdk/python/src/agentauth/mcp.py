"""agentauth for MCP servers written with the official `mcp` SDK or
FastMCP.

Both frameworks authenticate with a `TokenVerifier` whose
`verify_token(token)` sees only the token: not the method, URL, or `DPoP`
header, so a DPoP proof (RFC 9449 §7) cannot be checked there, and their
bearer backend accepts only the `Bearer` scheme. So the integration is two
parts that work together:

* :class:`AgentAuthMiddleware`, an ASGI middleware (outermost) that
  verifies the whole request on the MCP path (token, `typ`, DPoP proof,
  replay, scopes), answers failures itself with RFC 6750 / RFC 9449
  challenges naming the RFC 9728 metadata, and hands the framework a
  `Bearer` header for the request it verified;
* :class:`AgentAuthTokenVerifier` (the `mcp` SDK's `TokenVerifier`) and
  :class:`AgentAuthProvider` (a FastMCP `AuthProvider`), which return the
  middleware's result for that request. Without the middleware they verify
  as bearer-only, so a DPoP-bound token is never accepted without its
  proof.

:func:`metadata_routes` serves RFC 9728 metadata with the issuer spelled
exactly as the authorization server does (pydantic's `AnyHttpUrl` adds a
trailing slash to a bare origin, which strict clients reject as an issuer
mismatch).
"""

from __future__ import annotations

import contextvars
import json
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from . import approvals
from .verifier import (
    DPOP_ALGS,
    InsufficientScope,
    InvalidToken,
    OutsideApproval,
    ReplayCache,
    ResourceError,
    ResourceVerifier,
    Verified,
)

_verified: contextvars.ContextVar[Verified | None] = contextvars.ContextVar("agentauth_verified", default=None)


def current() -> Verified | None:
    """The request's verified token (claims, kind, `act` chain, scopes)."""
    return _verified.get()


def metadata_path(resource: str) -> str:
    """RFC 9728 §3.1: `/.well-known/oauth-protected-resource` + the resource's path."""
    return "/.well-known/oauth-protected-resource" + urlsplit(resource).path.rstrip("/")


def metadata_url(resource: str) -> str:
    u = urlsplit(resource)
    return f"{u.scheme}://{u.netloc}{metadata_path(resource)}"


def protected_resource_metadata(verifier: ResourceVerifier, scopes: Sequence[str] = (),
                                resource_name: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "resource": verifier.audience,
        "authorization_servers": [verifier.issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGS),
    }
    if scopes:
        doc["scopes_supported"] = list(scopes)
    if resource_name:
        doc["resource_name"] = resource_name
    if verifier.require_dpop:
        doc["dpop_bound_access_tokens_required"] = True
    return doc


def metadata_routes(verifier: ResourceVerifier, scopes: Sequence[str] = (), resource_name: str | None = None) -> list[Any]:
    """Starlette routes serving the RFC 9728 document at its well-known
    path (and the bare well-known URI, for clients that ignore the path)."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    body = protected_resource_metadata(verifier, scopes, resource_name)

    async def serve(_request: Any) -> Any:
        return JSONResponse(body, headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=300"})

    paths = {metadata_path(verifier.audience), "/.well-known/oauth-protected-resource"}
    return [Route(p, serve, methods=["GET", "OPTIONS"]) for p in sorted(paths, reverse=True)]


class AgentAuthMiddleware:
    """ASGI middleware verifying requests to the resource's path(s).

    `scopes`: scopes every request needs (403 `insufficient_scope` else);
    `challenge_scope`: what a 401 asks clients to request (default: `scopes`);
    `tool_scopes`: per tool, the scopes a `tools/call` of it needs: the
    POSTed JSON-RPC body (one message or a batch) is read, and a call
    without them is 403 `insufficient_scope` naming the scopes to step up
    to, so that MCP clients ask for them and retry (MCP authorization,
    scope challenge handling), as the Rust kit's `Guard::tool_scopes`;
    `approval_tools`: tools each call of which needs its owner's approval
    (see :mod:`agentauth.approvals`).
    """

    def __init__(self, app: Any, verifier: ResourceVerifier, *, paths: Sequence[str] | None = None,
                 scopes: Sequence[str] = (), challenge_scope: Sequence[str] | None = None,
                 tool_scopes: Mapping[str, Sequence[str]] | None = None,
                 approval_tools: Sequence[str] = (), spent: ReplayCache | None = None) -> None:
        self.app = app
        self.tool_scopes = {k: list(v) for k, v in (tool_scopes or {}).items()}
        self.approval_tools = set(approval_tools)
        #: Spent approval tokens (by jti). One process: instances of one
        #: resource behind a load balancer need a shared store instead.
        self.spent = spent if spent is not None else ReplayCache()
        self.verifier = verifier
        resource = urlsplit(verifier.audience)
        self.origin = f"{resource.scheme}://{resource.netloc}"
        self.paths = set(paths) if paths is not None else {resource.path or "/"}
        self.paths |= {p.rstrip("/") for p in self.paths} | {p.rstrip("/") + "/" for p in self.paths}
        self.scopes = list(scopes)
        self.challenge_scope = " ".join(challenge_scope if challenge_scope is not None else scopes) or None
        self.metadata_url = metadata_url(verifier.audience)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        authorization = [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
        proofs = [v.decode("latin-1") for k, v in scope["headers"] if k == b"dpop"]
        # htu: the URL the client addressed, from configuration (never Host).
        url = self.origin + scope.get("root_path", "") + scope["path"]
        try:
            verified = await self.verifier.averify(scope["method"], url, authorization, proofs)
            approval = approvals.approves_tool_calls(verified.claims)
            if approval:
                # The approval is the grant: no scope needed, but a proof.
                if verified.dpop_jkt is None:
                    raise InvalidToken(approvals.UNBOUND_APPROVAL)
                if scope["method"] != "POST":
                    raise OutsideApproval(approvals.OTHER_METHOD)
            else:
                verified.require_scopes(self.scopes)
        except ResourceError as error:
            await self._refuse(send, error)
            return
        if scope["method"] == "POST" and (approval or self.tool_scopes or self.approval_tools):
            body = await _read_body(receive)
            if body is None:
                await _send_json(send, 413, {"error": "request body too large"}, [])
                return
            parsed = approvals.messages(body)
            try:
                answer = (self._approved(verified, parsed) if approval else self._ordinary(verified, parsed))
            except ResourceError as error:
                await self._refuse(send, error)
                return
            if answer is not None:
                await _send_json(send, answer[0], answer[1], [])
                return
            receive = _replay(body)
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", b"dpop")]
        headers.append((b"authorization", b"Bearer " + verified.token.encode()))
        reset = _verified.set(verified)
        try:
            await self.app(dict(scope, headers=headers), receive, send)
        finally:
            _verified.reset(reset)

    def _ordinary(self, verified: Verified, parsed: tuple[list[dict[str, Any]], bool] | None) -> tuple[int, Any] | None:
        """An ordinary token: tool scopes, then calls of approval tools
        (answered with the JSON-RPC error naming the approval to ask for)."""
        if parsed is None:
            return None  # not JSON-RPC: the MCP service answers it
        calls = [m for m in parsed[0] if m.get("method") == "tools/call" and isinstance(m.get("params"), dict)]
        for m in calls:
            tool = m["params"].get("name")
            if isinstance(tool, str):
                verified.require_scopes(self.tool_scopes.get(tool, ()))
        needing = [m for m in calls if m["params"].get("name") in self.approval_tools]
        if not needing:
            return None
        if parsed[1]:
            return 400, _rpc_error(None, -32600, "a call of a tool that needs its owner's approval must be sent alone, not in a batch")
        call = needing[0]
        arguments = call["params"].get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            return 200, _rpc_error(call.get("id"), -32602, "the arguments of a tool call must be an object")
        return 200, approvals.approval_required_error(call.get("id"), self.verifier.audience, self.verifier.issuer,
                                                      call["params"]["name"], arguments)

    def _approved(self, verified: Verified, parsed: tuple[list[dict[str, Any]], bool] | None) -> tuple[int, Any] | None:
        """An approval token: passes the methods that do not act, spends the
        token for the one call it covers, refuses anything else."""
        if parsed is None:
            raise OutsideApproval(approvals.OTHER_METHOD)
        call = None
        for m in parsed[0]:
            method = m.get("method")
            if method in ("initialize", "ping", "tools/list") or (isinstance(method, str) and method.startswith("notifications/")):
                continue
            if method == "tools/call" and parsed[1]:
                return 400, _rpc_error(None, -32600, "an approved tool call must be sent alone, not in a batch")
            if method == "tools/call":
                call = m
                continue
            raise OutsideApproval(approvals.OTHER_METHOD)
        if call is None:
            return None
        raw_params = call.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        tool = params.get("name")
        if not isinstance(tool, str) or not approvals.covers(verified.claims, self.verifier.audience, tool, params.get("arguments")):
            raise OutsideApproval(approvals.NOT_COVERED)
        # Spent once, kept while the verifier could still accept the token.
        now = int(self.verifier.clock())
        until = int(verified.claims["exp"]) + self.verifier.leeway
        if not self.spent.spend(str(verified.claims["jti"]), until, now):
            raise InvalidToken(approvals.ALREADY_USED)
        return None

    async def _refuse(self, send: Any, error: ResourceError) -> None:
        status, headers = error.challenge(
            self.metadata_url, None if isinstance(error, (InsufficientScope, OutsideApproval)) else self.challenge_scope)
        code = error.code or ("temporarily_unavailable" if status == 503 else "invalid_token")
        await _send_json(send, status, {"error": code,
                                        "error_description": error.description}, headers)


MAX_MCP_BODY = 4 * 1024 * 1024


async def _read_body(receive: Any) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_MCP_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _rpc_error(id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}


async def _send_json(send: Any, status: int, payload: dict[str, Any], headers: list[tuple[str, str]]) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _access_token_fields(verified: Verified) -> dict[str, Any]:
    claims = dict(verified.claims)
    return {
        "token": verified.token,
        "client_id": verified.client_id,
        "scopes": list(verified.scopes),
        "expires_at": claims.get("exp"),
        "resource": None,
        "subject": verified.subject,
        "claims": claims,
    }


async def _verify(verifier: ResourceVerifier, token: str) -> Verified | None:
    seen = _verified.get()
    if seen is not None and seen.token == token:
        return seen
    # No middleware verified this request: bearer-only (a bound token is
    # refused, since its proof cannot be checked here).
    try:
        return await verifier.averify("POST", verifier.audience, f"Bearer {token}")
    except ResourceError:
        return None


class AgentAuthTokenVerifier:
    """The official `mcp` SDK's `TokenVerifier` (use with
    :class:`AgentAuthMiddleware` around the app for DPoP)."""

    def __init__(self, verifier: ResourceVerifier, *, required_scopes: Sequence[str] = ()) -> None:
        """`required_scopes`: the server's `AuthSettings.required_scopes`,
        reported for an approval token the middleware let through for its
        one call (such a token may carry no scope: the approval is the grant)."""
        self.verifier = verifier
        self.required_scopes = list(required_scopes)

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        verified = await _verify(self.verifier, token)
        if verified is None:
            return None
        fields = _access_token_fields(verified)
        fields["resource"] = self.verifier.audience
        if verified is _verified.get() and approvals.approves_tool_calls(verified.claims):
            fields["scopes"] = sorted(set(fields["scopes"]) | set(self.required_scopes))
        return AccessToken(**fields)


def _fastmcp_provider_class() -> Any:
    from fastmcp.server.auth.auth import AccessToken, AuthProvider
    from starlette.middleware import Middleware

    class _AgentAuthProvider(AuthProvider):
        """A FastMCP auth provider: our middleware first, then FastMCP's own
        bearer backend fed by :meth:`verify_token`; RFC 9728 metadata with
        the issuer as the authorization server spells it."""

        def __init__(self, verifier: ResourceVerifier, *, required_scopes: Sequence[str] = (),
                     scopes_supported: Sequence[str] = (), resource_name: str | None = None,
                     tool_scopes: Mapping[str, Sequence[str]] | None = None,
                     approval_tools: Sequence[str] = ()) -> None:
            resource = urlsplit(verifier.audience)
            super().__init__(base_url=f"{resource.scheme}://{resource.netloc}", required_scopes=list(required_scopes))
            self.verifier = verifier
            self._scopes_supported = list(scopes_supported) or list(required_scopes)
            self.resource_name = resource_name
            self.tool_scopes = tool_scopes
            self.approval_tools = list(approval_tools)

        @property
        def scopes_supported(self) -> list[str]:
            return self._scopes_supported

        async def verify_token(self, token: str) -> Any:
            verified = await _verify(self.verifier, token)
            if verified is None:
                return None
            fields = _access_token_fields(verified)
            fields["resource"] = self.verifier.audience
            if verified is _verified.get() and approvals.approves_tool_calls(verified.claims):
                # An approval token may carry no scope (the approval is the
                # grant); the middleware has let it through for its one call
                # only, so FastMCP's server-wide scope check must not refuse it.
                fields["scopes"] = sorted(set(fields["scopes"]) | set(self.required_scopes))
            return AccessToken(**fields)

        def get_routes(self, mcp_path: str | None = None) -> list[Any]:
            self.set_mcp_path(mcp_path)
            return metadata_routes(self.verifier, self._scopes_supported, self.resource_name)

        def _get_resource_url(self, path: str | None = None) -> Any:
            from pydantic import AnyHttpUrl

            return AnyHttpUrl(self.verifier.audience)

        def get_middleware(self) -> list[Any]:
            return [Middleware(AgentAuthMiddleware, verifier=self.verifier, scopes=self.required_scopes,
                               challenge_scope=self.required_scopes or self._scopes_supported or None,
                               tool_scopes=self.tool_scopes, approval_tools=self.approval_tools)] + super().get_middleware()

    return _AgentAuthProvider


def AgentAuthProvider(verifier: ResourceVerifier, *, required_scopes: Sequence[str] = (),
                      scopes_supported: Sequence[str] = (), resource_name: str | None = None,
                      tool_scopes: Mapping[str, Sequence[str]] | None = None,
                      approval_tools: Sequence[str] = ()) -> Any:
    """A FastMCP `AuthProvider` for agentauth tokens (bearer and
    DPoP-bound; passports only if the verifier accepts them):
    ``FastMCP("notes", auth=AgentAuthProvider(verifier, required_scopes=["tools:read"]))``."""
    return _fastmcp_provider_class()(verifier, required_scopes=required_scopes, scopes_supported=scopes_supported,
                                     resource_name=resource_name, tool_scopes=tool_scopes,
                                     approval_tools=approval_tools)
