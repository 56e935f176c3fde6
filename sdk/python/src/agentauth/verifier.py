"""The resource-server side of agentauth tokens, as the Rust resource kit
(`resource-kit/src/verifier.rs`) does it: an RFC 9068 access token
(`typ: at+jwt`) checked against the issuer's JWKS, and when it is
DPoP-bound (`cnf.jkt`) its proof (RFC 9449 §4.3 and §7) with a replay
cache; failures answered with RFC 6750 / RFC 9449 challenges naming the
resource's RFC 9728 metadata.

Agent passports (`typ: agent-passport+jwt`) are refused unless the
resource opts in (`accept_passports=True`); then only one whose `aud`
names this resource, with a DPoP proof of its key, granting only the
scopes the resource's `passport_scopes` policy gives (SECURITY.md,
"Passport used as an access token").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from urllib.parse import urlsplit

import jwt
from jwt.algorithms import OKPAlgorithm
from jwt.api_jws import PyJWS

from .jwks import JwksCache, VerifyingKey

if TYPE_CHECKING:
    from .status import StatusLists

ACCESS_TOKEN_TYP = "at+jwt"
PASSPORT_TYP = "agent-passport+jwt"
DPOP_TYP = "dpop+jwt"
#: Algorithms accepted for DPoP proofs, as the Rust kit: `Ed25519` is the
#: fully-specified name of RFC 9864 (what oauth4webapi and other current
#: clients send), `EdDSA` the older polymorphic one.
DPOP_ALGS: tuple[str, ...] = ("ES256", "EdDSA", "Ed25519", "RS256", "PS256")
_DPOP_KTY = {"ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519"), "Ed25519": ("OKP", "Ed25519"),
             "RS256": ("RSA", None), "PS256": ("RSA", None)}
# PyJWT knows Ed25519 signatures as `EdDSA`; this instance also takes the
# RFC 9864 name, with the same implementation (OKPAlgorithm).
_PROOF_JWS = PyJWS()
_PROOF_JWS.register_algorithm("Ed25519", OKPAlgorithm())
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k", "oth", "r", "t")


class ResourceError(Exception):
    """Why a request was refused; `challenge()` gives the HTTP answer."""

    status = 401
    code: str | None = "invalid_token"

    def __init__(self, description: str = "", **kw: Any) -> None:
        super().__init__(description)
        self.description = description
        self.extra = kw

    def challenge(self, resource_metadata: str | None = None, scope: str | None = None) -> tuple[int, list[tuple[str, str]]]:
        """(status, headers): `WWW-Authenticate` challenges (a `Bearer` one
        first, for clients that read only the first) and `DPoP-Nonce`."""
        return _challenge(self, resource_metadata, scope)


class MissingToken(ResourceError):
    code = None


class InvalidRequest(ResourceError):
    status = 400
    code = "invalid_request"


class InvalidToken(ResourceError):
    code = "invalid_token"


class InvalidDpopProof(ResourceError):
    code = "invalid_dpop_proof"


class UseDpopNonce(ResourceError):
    code = "use_dpop_nonce"

    def __init__(self, nonce: str) -> None:
        super().__init__("a DPoP nonce is required")
        self.nonce = nonce


class InsufficientScope(ResourceError):
    status = 403
    code = "insufficient_scope"

    def __init__(self, scopes: Sequence[str]) -> None:
        super().__init__("the token lacks a scope this request needs")
        self.scopes = list(scopes)


# Signature only: issuer, audience and times are checked by the verifier
# (with its own clock and messages), after the signature cache.
_NO_CLAIM_CHECKS: Any = {"verify_signature": True, "verify_exp": False, "verify_nbf": False,
                    "verify_iat": False, "verify_aud": False, "verify_iss": False}

class OutsideApproval(ResourceError):
    """A valid token presented for something it does not grant and no scope
    would: an approval token (RFC 9396 `mcp_tool_call`) used for another
    call or method. 403 `insufficient_scope` with no `scope` parameter, so
    that a client does not try to step up for it."""

    status = 403
    code = "insufficient_scope"


PASSPORTS_REFUSED = "an agent passport is not an access token at this resource"


@dataclass(frozen=True)
class Verified:
    """A verified request. `kind` is "access" or "passport". For a
    passport, `claims` is read as an access token's (`sub`, `client_id`,
    `agent_id` the agent, `owner`, `agent_name`, `cnf`) and `scopes` is what
    the resource's policy grants, never the passport's own `scope`."""

    claims: Mapping[str, Any]
    kind: str
    token: str
    scopes: tuple[str, ...] = ()
    dpop_jkt: str | None = None

    @property
    def subject(self) -> str:
        return str(self.claims.get("sub", ""))

    @property
    def client_id(self) -> str:
        return str(self.claims.get("client_id", ""))

    @property
    def act_chain(self) -> list[dict[str, Any]]:
        """RFC 8693 `act` chain, current actor first."""
        out: list[dict[str, Any]] = []
        act = self.claims.get("act")
        while isinstance(act, dict) and len(out) < 32:
            out.append(act)
            act = act.get("act")
        return out

    def has_scopes(self, required: Iterable[str]) -> bool:
        return all(s in self.scopes for s in required)

    def require_scopes(self, required: Sequence[str]) -> None:
        """RFC 6750 §3.1: raise 403 `insufficient_scope` naming what the
        token has plus what is missing (so that a step-up keeps the rest)."""
        missing = [s for s in required if s not in self.scopes]
        if missing:
            raise InsufficientScope(list(self.scopes) + missing)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(access_token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url(SHA-256(access token))."""
    return _b64url(hashlib.sha256(access_token.encode()).digest())


_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (the required members, sorted, no
    whitespace), base64url: what `cnf.jkt` holds."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError("unsupported or malformed JWK")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _typ_is(typ: Any, want: str) -> bool:
    """RFC 7515 §4.1.9: `typ` in the short form or with `application/`."""
    if not isinstance(typ, str):
        return False
    t = typ.lower()
    return t == want or t == "application/" + want


def same_htu(claimed: str, expected: str) -> bool:
    """RFC 9449 §4.3 (9) with RFC 3986 §6 normalization: scheme and host
    case-insensitive, default port implied; query and fragment ignored."""
    try:
        a, b = urlsplit(claimed), urlsplit(expected)
        pa = a.port or {"http": 80, "https": 443}.get(a.scheme.lower())
        pb = b.port or {"http": 80, "https": 443}.get(b.scheme.lower())
    except ValueError:
        return False
    return (
        a.scheme.lower() == b.scheme.lower()
        and (a.hostname or "").lower() == (b.hostname or "").lower()
        and pa == pb
        and (a.path or "/") == (b.path or "/")
    )


class NonceKey:
    """Stateless DPoP server nonces (RFC 9449 §9, a resource's own):
    `base64url(window || HMAC-SHA256(secret, window)[:16])`, valid in the
    window they were minted in and the next, so every instance sharing
    `secret` accepts the others' nonces."""

    def __init__(self, secret: bytes, period: int = 300) -> None:
        if len(secret) < 32:
            raise ValueError("the nonce secret must be at least 32 bytes")
        self._secret = secret
        self.period = max(period, 1)

    def _mint(self, window: int) -> str:
        w = window.to_bytes(8, "big", signed=True)
        return _b64url(w + hmac.new(self._secret, w, hashlib.sha256).digest()[:16])

    def current(self, now: int) -> str:
        return self._mint(now // self.period)

    def is_valid(self, nonce: str, now: int) -> bool:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return False
        if len(raw) != 24:
            return False
        window = int.from_bytes(raw[:8], "big", signed=True)
        if window not in (now // self.period, now // self.period - 1):
            return False
        return hmac.compare_digest(self._mint(window), nonce)


class ReplayCache:
    """Spent DPoP proofs, `(jkt, jti)` → expiry, each kept while the iat
    window still accepts it (RFC 9449 §11.1). Thread-safe; bounded (the
    oldest entries go first when full, which a resource sizes above its
    proof rate times the window)."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def spend(self, key: str, keep_until: float, now: float) -> bool:
        """`True` the first time `key` is spent, `False` on a replay."""
        with self._lock:
            # Drop expired entries from the front (insertion order ~ time).
            while self._seen:
                first, until = next(iter(self._seen.items()))
                if until > now and len(self._seen) < self.max_entries:
                    break
                del self._seen[first]
            seen = self._seen.get(key)
            if seen is not None and seen > now:
                return False
            self._seen[key] = keep_until
            return True


def replay_retention(iat: int, now: int, iat_window: int) -> int:
    """Seconds a spent proof must be kept: until `iat + iat_window`, +1."""
    return max(iat + abs(iat_window) - now + 1, 1)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class ResourceVerifier:
    """Verifies requests for one resource (one `aud`).

    `keys` is a :class:`JwksCache` (by default, the issuer's `/jwks.json`).
    `url` given to :meth:`verify` is the resource URL as the client
    addressed it (from configuration, never the `Host` header).
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        keys: JwksCache | None = None,
        accept_passports: bool = False,
        passport_scopes: Callable[[Mapping[str, Any]], Sequence[str]] | None = None,
        require_dpop: bool = False,
        iat_window: int = 60,
        leeway: int = 30,
        token_cache: bool = True,
        replay: ReplayCache | None = None,
        nonces: NonceKey | None = None,
        check_status: "bool | StatusLists" = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys = keys if keys is not None else JwksCache(issuer.rstrip("/") + "/jwks.json")
        self.accept_passports = accept_passports
        self.passport_scopes = passport_scopes
        self.require_dpop = require_dpop
        self.iat_window = iat_window
        self.leeway = leeway
        self.replay = replay if replay is not None else ReplayCache()
        self.nonces = nonces
        #: Token status lists (revocation within the list's ttl), when on.
        self.status: StatusLists | None = None
        if check_status is True:
            from .status import StatusLists

            self.status = StatusLists(issuer, self.keys, clock=clock)
        elif check_status:
            self.status = check_status
        self.clock = clock
        # Signature-checked tokens by SHA-256 (a resource sees one token many
        # times): (kind, claims, kid, checked_at). Issuer, audience and time
        # are checked on every use; an entry counts only while its key is
        # still published.
        self._checked: OrderedDict[bytes, tuple[str, dict[str, Any], str, float]] | None = (
            OrderedDict() if token_cache else None
        )
        self._checked_max = 100_000
        self._checked_ttl = 300.0

    # -- tokens ---------------------------------------------------------

    def _header(self, token: str) -> tuple[str, str, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("the access token is invalid") from None
        kid, alg, typ = header.get("kid"), header.get("alg"), header.get("typ")
        if not isinstance(kid, str) or not isinstance(alg, str):
            raise InvalidToken("the access token is invalid")
        if _typ_is(typ, PASSPORT_TYP):
            if not self.accept_passports:
                raise InvalidToken(PASSPORTS_REFUSED)
            return kid, alg, "passport"
        if not _typ_is(typ, ACCESS_TOKEN_TYP):
            raise InvalidToken("the access token is invalid")
        return kid, alg, "access"

    def _decode(self, token: str, key: VerifyingKey | None, alg: str) -> dict[str, Any]:
        # RFC 8725 §3.1: the algorithm is the key's, never the token's.
        if key is None or alg != key.alg:
            raise InvalidToken("the access token is invalid")
        try:
            claims = jwt.decode(token, key.key, algorithms=[key.alg], options=_NO_CLAIM_CHECKS)
        except jwt.PyJWTError:
            raise InvalidToken("the access token is invalid") from None
        return claims

    def _cached(self, token: str) -> tuple[bytes, tuple[str, dict[str, Any], str, float] | None]:
        if self._checked is None:
            return b"", None
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._checked.get(digest)
        if hit is not None and (self.clock() - hit[3] > self._checked_ttl or not self.keys.is_published(hit[2])):
            hit = None
        return digest, hit

    def _remember(self, digest: bytes, kind: str, claims: dict[str, Any], kid: str) -> None:
        if self._checked is None:
            return
        self._checked[digest] = (kind, claims, kid, self.clock())
        while len(self._checked) > self._checked_max:
            self._checked.popitem(last=False)

    def _claims_sync(self, token: str) -> tuple[str, dict[str, Any]]:
        digest, hit = self._cached(token)
        if hit is not None:
            return hit[0], hit[1]
        kid, alg, kind = self._header(token)
        claims = self._decode(token, self.keys.get(kid), alg)
        self._remember(digest, kind, claims, kid)
        return kind, claims

    async def _claims_async(self, token: str) -> tuple[str, dict[str, Any]]:
        digest, hit = self._cached(token)
        if hit is not None:
            return hit[0], hit[1]
        kid, alg, kind = self._header(token)
        key = self.keys.cached(kid) if not self.keys.needs_fetch(kid) else await self.keys.aget(kid)
        claims = self._decode(token, key, alg)
        self._remember(digest, kind, claims, kid)
        return kind, claims

    def _check(self, token: str, kind: str, claims: dict[str, Any], now: int) -> Verified:
        for name in ("iss", "sub", "jti"):
            if not isinstance(claims.get(name), str):
                raise InvalidToken("the access token is invalid")
        # Numeric dates must be numbers (RFC 8725; a string `exp` is refused).
        if not _is_int(claims.get("exp")) or not _is_int(claims.get("iat")):
            raise InvalidToken("the access token is invalid")
        if "nbf" in claims and not _is_int(claims["nbf"]):
            raise InvalidToken("the access token is invalid")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else None
        if kind == "passport":
            if auds is None:
                raise InvalidToken("the passport names no site; ask for one whose audience is this resource")
            if self.audience not in auds:
                raise InvalidToken("the passport is for another site")
            if not isinstance(claims.get("cnf"), dict):
                raise InvalidToken("the access token is invalid")
            scopes = tuple(s for s in (self.passport_scopes(claims) if self.passport_scopes else ()) if s)
            view = {k: v for k, v in claims.items() if k not in ("scope", "act", "may_act")}
            view["client_id"] = claims["sub"]
            view.setdefault("agent_id", claims["sub"])
            if scopes:
                view["scope"] = " ".join(scopes)
            claims = view
        else:
            if not isinstance(claims.get("client_id"), str):
                raise InvalidToken("the access token is invalid")
            scope = claims.get("scope")
            scopes = tuple(s for s in scope.split(" ") if s) if isinstance(scope, str) else ()
        if claims["iss"] != self.issuer:
            raise InvalidToken("the access token is from another issuer")
        if auds is None or self.audience not in auds:
            raise InvalidToken("the access token is for another resource")
        if claims["exp"] + self.leeway <= now:
            raise InvalidToken("the access token has expired")
        if "nbf" in claims and claims["nbf"] > now + self.leeway:
            raise InvalidToken("the access token is not valid yet")
        # Read-only: the claims of a cached token are shared by its uses.
        return Verified(claims=MappingProxyType(claims), kind=kind, token=token, scopes=scopes)

    # -- requests -------------------------------------------------------

    @staticmethod
    def token_from(authorization: str | Sequence[str] | None) -> tuple[str, bool]:
        """RFC 6750 §2.1 / RFC 9449 §7.1: the token of the one
        `Authorization` header and whether its scheme is `DPoP`."""
        values = [authorization] if isinstance(authorization, str) else list(authorization or [])
        if not values:
            raise MissingToken()
        if len(values) > 1:
            raise InvalidRequest("more than one Authorization header")
        scheme, _, token = values[0].partition(" ")
        if not token:
            raise InvalidRequest("malformed Authorization header")
        dpop = scheme.lower() == "dpop"
        if not dpop and scheme.lower() != "bearer":
            raise MissingToken()
        return token.strip(), dpop

    def verify(self, method: str, url: str, authorization: str | Sequence[str] | None,
               dpop: str | Sequence[str] | None = None) -> Verified:
        """Verifies one request (synchronous; may block on a JWKS fetch)."""
        token, dpop_scheme = self.token_from(authorization)
        now = int(self.clock())
        kind, claims = self._claims_sync(token)
        verified = self._check(token, kind, claims, now)
        if self.status is not None:
            self.status.check(claims)
        return self._bind(verified, method, url, dpop_scheme, dpop, now)

    async def averify(self, method: str, url: str, authorization: str | Sequence[str] | None,
                      dpop: str | Sequence[str] | None = None) -> Verified:
        """:meth:`verify` for async servers (JWKS fetched with httpx async)."""
        token, dpop_scheme = self.token_from(authorization)
        now = int(self.clock())
        kind, claims = await self._claims_async(token)
        verified = self._check(token, kind, claims, now)
        if self.status is not None:
            await self.status.acheck(claims)
        return self._bind(verified, method, url, dpop_scheme, dpop, now)

    def _bind(self, verified: Verified, method: str, url: str, dpop_scheme: bool,
              dpop: str | Sequence[str] | None, now: int) -> Verified:
        cnf = verified.claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if jkt is not None and not dpop_scheme:
            raise InvalidToken("a DPoP-bound token must use the DPoP scheme")
        if jkt is None and dpop_scheme:
            raise InvalidToken("the token is not DPoP-bound")
        if jkt is None:
            if self.require_dpop:
                raise InvalidToken("this resource takes only DPoP-bound tokens")
            return verified
        proofs = [dpop] if isinstance(dpop, str) else list(dpop or [])
        if len(proofs) != 1:
            raise InvalidDpopProof("exactly one DPoP proof is required")
        proof_jkt, jti, iat = self.verify_proof(proofs[0], method, url, verified.token, now)
        # RFC 9449 §7.1: the proof key is the key the token is bound to.
        if proof_jkt != jkt:
            raise InvalidDpopProof("the proof key is not the key the token is bound to")
        retention = replay_retention(iat, now, self.iat_window)
        if not self.replay.spend(f"{proof_jkt}:{jti}", now + retention, now):
            raise InvalidDpopProof("DPoP proof jti was already used")
        return Verified(claims=verified.claims, kind=verified.kind, token=verified.token,
                        scopes=verified.scopes, dpop_jkt=proof_jkt)

    def verify_proof(self, proof: str, method: str, url: str, access_token: str | None, now: int) -> tuple[str, str, int]:
        """RFC 9449 §4.3 checks 2-12; returns (jkt, jti, iat). The caller
        spends the jti."""
        if proof.count(".") != 2:
            raise InvalidDpopProof("DPoP proof is not a compact JWS")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise InvalidDpopProof("DPoP proof header is not JSON") from None
        if header.get("typ") != DPOP_TYP:
            raise InvalidDpopProof("DPoP proof typ must be dpop+jwt")
        alg = header.get("alg")
        if alg not in DPOP_ALGS:
            raise InvalidDpopProof("DPoP proof alg is not supported")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict):
            raise InvalidDpopProof("DPoP proof has no jwk")
        if any(m in jwk for m in _PRIVATE_MEMBERS):
            raise InvalidDpopProof("DPoP proof jwk must not contain a private key")
        kty, crv = _DPOP_KTY[alg]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            raise InvalidDpopProof("DPoP proof jwk does not fit its alg")
        try:
            key = jwt.PyJWK(jwk, algorithm="EdDSA" if alg == "Ed25519" else alg).key
            thumb = jwk_thumbprint(jwk)
        except Exception:
            raise InvalidDpopProof("DPoP proof jwk is malformed") from None
        if kty == "RSA" and getattr(key, "key_size", 0) < 2048:
            raise InvalidDpopProof("DPoP proof RSA key is shorter than 2048 bits")
        try:
            claims = json.loads(_PROOF_JWS.decode(proof, key, algorithms=[alg]))
            if not isinstance(claims, dict):
                raise ValueError("the claims are not an object")
        except (jwt.PyJWTError, ValueError):
            raise InvalidDpopProof("DPoP proof signature or claims are invalid") from None
        jti, htm, htu, iat = claims.get("jti"), claims.get("htm"), claims.get("htu"), claims.get("iat")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise InvalidDpopProof("DPoP proof jti must be 1 to 256 characters")
        if htm != method:
            raise InvalidDpopProof("DPoP proof htm does not match the request method")
        if not isinstance(htu, str) or not same_htu(htu, url):
            raise InvalidDpopProof("DPoP proof htu does not match the request URL")
        # §4.3 (10): the nonce, when this resource hands them out.
        if self.nonces is not None:
            nonce = claims.get("nonce")
            if not isinstance(nonce, str) or not self.nonces.is_valid(nonce, now):
                raise UseDpopNonce(self.nonces.current(now))
        if not isinstance(iat, int) or isinstance(iat, bool) or abs(iat - now) > abs(self.iat_window):
            raise InvalidDpopProof("DPoP proof iat is outside the acceptable window")
        if access_token is not None and claims.get("ath") != ath(access_token):
            raise InvalidDpopProof("DPoP proof ath does not match the access token")
        return thumb, jti, iat


def _challenge(err: ResourceError, resource_metadata: str | None, scope: str | None) -> tuple[int, list[tuple[str, str]]]:
    def quote(s: str) -> str:
        return s.replace('"', "'").replace("\\", "'")

    if err.status == 503:
        return 503, [("Retry-After", str(getattr(err, "retry_after", 5)))]
    algs = f'algs="{" ".join(DPOP_ALGS)}"'
    if isinstance(err, InsufficientScope):
        scope = " ".join(err.scopes)
    common = []
    if resource_metadata:
        common.append(f'resource_metadata="{quote(resource_metadata)}"')
    if scope:
        common.append(f'scope="{quote(scope)}"')

    def challenge(scheme: str, params: list[str], dpop: bool) -> str:
        params = params + common + ([algs] if dpop else [])
        return f"{scheme} {', '.join(params)}" if params else scheme

    error = [f'error="{err.code}"', f'error_description="{quote(err.description)}"'] if err.code else []
    headers: list[tuple[str, str]] = []
    if isinstance(err, MissingToken):
        values = [challenge("Bearer", ['realm="agentauth"'], False), challenge("DPoP", [], True)]
    elif isinstance(err, InvalidRequest):
        values = [challenge("Bearer", error, False)]
    elif isinstance(err, (InvalidDpopProof, UseDpopNonce)):
        values = [challenge("DPoP", error, True)]
        if isinstance(err, UseDpopNonce):
            headers.append(("DPoP-Nonce", err.nonce))
    else:
        values = [challenge("Bearer", error, False), challenge("DPoP", error, True)]
    return err.status, [("WWW-Authenticate", v) for v in values] + headers
