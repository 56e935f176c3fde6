"""Approvals of single MCP tool calls (RFC 9396 `mcp_tool_call`), as the
Rust kit's `details.rs` and `Guard::approval_tools`: a tool that needs its
owner's approval answers an ordinary token with the JSON-RPC error -31403
naming the exact `authorization_details` to ask for; a token carrying them
(DPoP-bound) is good for that one call, once, and for `initialize`,
`ping`, `notifications/*` and `tools/list`.

Arguments are compared in RFC 8785 canonical form (`rfc8785`), so that
`{"a": 1, "b": 2.0}` approves `{"b": 2, "a": 1}`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

MCP_TOOL_CALL = "mcp_tool_call"
#: JSON-RPC error code of "this call needs its owner's approval".
APPROVAL_REQUIRED = -31403
UNBOUND_APPROVAL = "a token that approves tool calls must be DPoP-bound (cnf.jkt) and used with its DPoP proof"
OTHER_METHOD = ("a token that approves tool calls is good only for those calls "
                "(and initialize, ping, notifications and tools/list)")
NOT_COVERED = "the token approves other tool calls than this one (tool, arguments and resource must match)"
ALREADY_USED = "the approval token was already used"


def _canonical(arguments: Any) -> bytes | None:
    import rfc8785

    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    try:
        return bytes(rfc8785.dumps(arguments))
    except Exception:  # noqa: BLE001 - values JSON cannot hold
        return None


def entry(resource: str, tool: str, arguments: Any) -> dict[str, Any]:
    """The `authorization_details` entry that approves one call."""
    return {"type": MCP_TOOL_CALL, "locations": [resource], "tool": tool,
            "arguments": {} if arguments is None else arguments}


def approves_tool_calls(claims: Mapping[str, Any]) -> bool:
    details = claims.get("authorization_details")
    return isinstance(details, list) and any(isinstance(e, dict) and e.get("type") == MCP_TOOL_CALL for e in details)


def covers(claims: Mapping[str, Any], resource: str, tool: str, arguments: Any) -> bool:
    """Whether one of the token's `mcp_tool_call` entries approves this call
    at this resource."""
    wanted = _canonical(arguments)
    if wanted is None:
        return False
    for e in claims.get("authorization_details") or ():
        if not isinstance(e, dict) or e.get("type") != MCP_TOOL_CALL or e.get("tool") != tool:
            continue
        locations = e.get("locations", [])
        if not isinstance(locations, list) or (locations and resource not in locations):
            continue
        if _canonical(e.get("arguments")) == wanted:
            return True
    return False


def approval_required_error(id: Any, resource: str, issuer: str, tool: str, arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "error": {
        "code": APPROVAL_REQUIRED,
        "message": (f"calling {tool} needs its owner's approval of this exact call: ask an authorization server in "
                    "`authorization_servers` for a DPoP-bound token with these `authorization_details` (the owner "
                    "approves it), then make the call again with it"),
        "data": {"authorization_details": [entry(resource, tool, arguments)], "authorization_servers": [issuer],
                 "resource": resource, "dpop_required": True},
    }}


def messages(body: bytes) -> tuple[list[dict[str, Any]], bool] | None:
    """The JSON-RPC messages of a body and whether it was a batch (None: not JSON)."""
    import json

    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    batch = isinstance(parsed, list)
    items: Sequence[Any] = parsed if batch else [parsed]
    return [m for m in items if isinstance(m, dict)], batch
