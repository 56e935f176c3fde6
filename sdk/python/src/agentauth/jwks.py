"""The authorization server's JWKS, cached, refetched on an unknown `kid`.

PyJWT's own `PyJWKClient` refetches on *every* unknown `kid` (a forged
`kid` per request becomes one fetch per request) and fetches with blocking
urllib; this cache refetches at most once per `min_refresh_interval`
seconds, and pins each key's algorithm (RFC 8725 §3.1).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx
import jwt

#: Algorithms a key may be pinned to (never a MAC, never `none`).
ASYMMETRIC_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})


@dataclass(frozen=True)
class VerifyingKey:
    """A verification key and the one algorithm it verifies."""

    kid: str
    alg: str
    key: Any  # a cryptography public key


def keys_from_jwks(document: dict[str, Any]) -> dict[str, VerifyingKey]:
    """The usable keys of a JWKS document, by `kid`: each key's algorithm
    is its JWK `alg`; without one, EC P-256 means ES256 and OKP Ed25519
    EdDSA, and an RSA key (RS256 or PS256?) is skipped as ambiguous, as are
    keys without `kid`, private keys and symmetric keys."""
    out: dict[str, VerifyingKey] = {}
    for jwk in document.get("keys", []):
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or any(m in jwk for m in ("d", "p", "q", "dp", "dq", "qi", "k")):
            continue
        alg = jwk.get("alg")
        if alg is None:
            if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
                alg = "ES256"
            elif jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                alg = "EdDSA"
        if alg not in ASYMMETRIC_ALGS or jwk.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
        except Exception:
            continue
        out[kid] = VerifyingKey(kid=kid, alg=alg, key=key)
    return out


class JwksCache:
    """The keys at `jwks_uri`, fetched on first use, kept `max_age` seconds,
    refetched early when a token names an unknown `kid` (key rotation), at
    most once per `min_refresh_interval` seconds.

    `get(kid)` is synchronous (it may block on a fetch); async servers call
    `aget(kid)`, which fetches with `httpx.AsyncClient`.
    """

    def __init__(
        self,
        jwks_uri: str,
        *,
        max_age: float = 300.0,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_uri = jwks_uri
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self.timeout = timeout
        self._clock = clock
        self._keys: dict[str, VerifyingKey] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()
        self._alock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        #: Number of fetches made (for tests and metrics).
        self.fetches = 0

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> "JwksCache":
        """A fixed key set (no fetching), e.g. for tests or offline use."""
        cache = cls("", max_age=float("inf"), min_refresh_interval=float("inf"))
        cache._keys = keys_from_jwks(document)
        cache._fetched_at = cache._clock()
        return cache

    def _needs(self, kid: str) -> bool:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self.max_age:
            return True
        return kid not in self._keys and now - self._fetched_at >= self.min_refresh_interval

    def _store(self, document: dict[str, Any]) -> None:
        self._keys = keys_from_jwks(document)
        self._fetched_at = self._clock()
        self.fetches += 1

    def cached(self, kid: str) -> VerifyingKey | None:
        """The key if it is known now, without fetching."""
        return self._keys.get(kid)

    def needs_fetch(self, kid: str) -> bool:
        return bool(self.jwks_uri) and self._needs(kid)

    def get(self, kid: str) -> VerifyingKey | None:
        if self.needs_fetch(kid):
            with self._lock:
                if self._needs(kid):
                    try:
                        response = httpx.get(self.jwks_uri, timeout=self.timeout)
                        response.raise_for_status()
                        self._store(response.json())
                    except (httpx.HTTPError, ValueError):
                        # Keep the last good keys; retry after the interval.
                        self._fetched_at = self._clock()
        return self._keys.get(kid)

    async def aget(self, kid: str) -> VerifyingKey | None:
        if self.needs_fetch(kid):
            # One fetch at a time per event loop: concurrent requests on a
            # cold cache, or with the same new kid, wait for it.
            loop = asyncio.get_running_loop()
            if self._alock is None or self._alock[0] is not loop:
                self._alock = (loop, asyncio.Lock())
            async with self._alock[1]:
                if self._needs(kid):
                    try:
                        async with httpx.AsyncClient(timeout=self.timeout) as client:
                            response = await client.get(self.jwks_uri)
                            response.raise_for_status()
                            self._store(response.json())
                    except (httpx.HTTPError, ValueError):
                        self._fetched_at = self._clock()
        return self._keys.get(kid)

    def is_published(self, kid: str) -> bool:
        return kid in self._keys
