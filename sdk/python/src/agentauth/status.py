"""Token Status List (draft-ietf-oauth-status-list) for verifiers: a
revoked token (a disabled agent's, a revoked grant's) stops working here
within its list's `ttl` instead of at its `exp`.

A token's `status` claim points into a list (`{"status_list": {"idx": 7,
"uri": "<issuer>/statuslists/1"}}`); the list is a JWT (`typ:
statuslist+jwt`) signed by the issuer, holding `bits` per token,
DEFLATE/ZLIB-compressed and base64url-encoded (`lst`). Lists are kept for
their `ttl` (clamped to `min_ttl`..`max_ttl`); while the issuer cannot be
reached the last good list serves for `grace` more seconds, then requests
are refused with 503 and `Retry-After` (never silently accepted).
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import httpx
import jwt

from .jwks import JwksCache
from .verifier import InvalidToken, ResourceError

STATUS_LIST_TYP = "statuslist+jwt"
MAX_LIST_BYTES = 16 * 1024 * 1024


class StatusListUnavailable(ResourceError):
    """The token's list could not be fetched and the last good one is past
    its grace (or was never fetched): 503, try again after `retry_after`."""

    status = 503
    code = None

    def __init__(self, retry_after: int) -> None:
        super().__init__("the token's status list is unavailable")
        self.retry_after = max(retry_after, 1)


@dataclass
class _List:
    bits: int
    data: bytes
    fresh_until: float
    usable_until: float


class StatusLists:
    """Fetched status lists, by URI. Only lists under the issuer's URL are
    fetched (a token cannot make this resource fetch another address)."""

    def __init__(self, issuer: str, keys: JwksCache, *, min_ttl: float = 1, max_ttl: float = 300,
                 grace: float = 60, timeout: float = 5, clock: Callable[[], float] = time.time) -> None:
        self.issuer = issuer
        self.keys = keys
        self.min_ttl, self.max_ttl, self.grace, self.timeout = min_ttl, max_ttl, grace, timeout
        self.clock = clock
        self._lists: dict[str, _List] = {}
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._alock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self.fetches = 0

    def _reference(self, claims: Mapping[str, Any]) -> tuple[str, int] | None:
        status = claims.get("status")
        if status is None:
            return None
        ref = status.get("status_list") if isinstance(status, dict) else None
        uri = ref.get("uri") if isinstance(ref, dict) else None
        idx = ref.get("idx") if isinstance(ref, dict) else None
        if not isinstance(uri, str) or not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise InvalidToken("the access token's status claim is malformed")
        if not uri.startswith(self.issuer.rstrip("/") + "/"):
            raise InvalidToken("the access token's status list is not the issuer's")
        return uri, idx

    def _parse(self, uri: str, text: str, now: float) -> _List:
        header = jwt.get_unverified_header(text)
        if header.get("typ") != STATUS_LIST_TYP:
            raise ValueError("not a status list token")
        key = self.keys.get(str(header.get("kid")))
        if key is None or header.get("alg") != key.alg:
            raise ValueError("unknown key")
        claims = jwt.decode(text, key.key, algorithms=[key.alg], options={"verify_aud": False, "require": ["sub", "iat"]})
        if claims["sub"] != uri or claims.get("iss", self.issuer) != self.issuer:
            raise ValueError("a list for another URI or issuer")
        sl = claims["status_list"]
        bits = sl["bits"]
        if bits not in (1, 2, 4, 8):
            raise ValueError("bits")
        lst = sl["lst"]
        inflater = zlib.decompressobj()
        data = inflater.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)), MAX_LIST_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError("list too large")
        ttl = min(max(float(claims.get("ttl", self.max_ttl)), self.min_ttl), self.max_ttl)
        exp = float(claims["exp"]) if isinstance(claims.get("exp"), int) else float("inf")
        fresh = min(now + ttl, exp)
        return _List(bits, data, fresh, min(fresh + self.grace, exp))

    def _status(self, entry: _List, idx: int) -> int:
        per_byte = 8 // entry.bits
        byte = idx // per_byte
        if byte >= len(entry.data):
            raise InvalidToken("the access token's status index is outside its list")
        return (entry.data[byte] >> ((idx % per_byte) * entry.bits)) & ((1 << entry.bits) - 1)

    def _decide(self, uri: str, idx: int, now: float) -> None:
        entry = self._lists.get(uri)
        if entry is None or now >= entry.usable_until:
            retry = self._retry_at.get(uri, now + 1)
            raise StatusListUnavailable(int(retry - now) + 1)
        if self._status(entry, idx) != 0:
            raise InvalidToken("the access token is revoked")

    def _store(self, uri: str, response: httpx.Response, now: float) -> None:
        try:
            response.raise_for_status()
            self._lists[uri] = self._parse(uri, response.text, now)
            self.fetches += 1
            self._retry_at.pop(uri, None)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, jwt.PyJWTError, zlib.error):
            self._retry_at[uri] = now + 5

    def _wanted(self, uri: str, now: float) -> bool:
        entry = self._lists.get(uri)
        return (entry is None or now >= entry.fresh_until) and now >= self._retry_at.get(uri, 0)

    def check(self, claims: Mapping[str, Any]) -> None:
        """Raises if the token is revoked or suspended, or its list cannot be had."""
        ref = self._reference(claims)
        if ref is None:
            return
        uri, idx = ref
        now = self.clock()
        if self._wanted(uri, now):
            with self._lock:
                if self._wanted(uri, now):
                    try:
                        r = httpx.get(uri, timeout=self.timeout, headers={"accept": "application/statuslist+jwt"})
                    except httpx.HTTPError:
                        self._retry_at[uri] = now + 5
                    else:
                        self._store(uri, r, now)
        self._decide(uri, idx, now)

    async def acheck(self, claims: Mapping[str, Any]) -> None:
        ref = self._reference(claims)
        if ref is None:
            return
        uri, idx = ref
        now = self.clock()
        if self._wanted(uri, now):
            loop = asyncio.get_running_loop()
            if self._alock is None or self._alock[0] is not loop:
                self._alock = (loop, asyncio.Lock())
            async with self._alock[1]:
                if self._wanted(uri, now):
                    try:
                        async with httpx.AsyncClient(timeout=self.timeout) as client:
                            r = await client.get(uri, headers={"accept": "application/statuslist+jwt"})
                    except httpx.HTTPError:
                        self._retry_at[uri] = now + 5
                    else:
                        self._store(uri, r, now)
        self._decide(uri, idx, now)
