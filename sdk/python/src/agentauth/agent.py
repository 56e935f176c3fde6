"""The agent side: a key, DPoP proofs (RFC 9449) with server nonces,
`private_key_jwt` client assertions (RFC 7523), and the grants an agent
uses at agentauth's `/token`: client_credentials, the passport grant and
token exchange (RFC 8693)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from jwt.api_jws import PyJWS

from .verifier import ath, jwk_thumbprint

PASSPORT_GRANT = "urn:agentauth:params:grant-type:passport"
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
PASSPORT_TOKEN_TYPE = "urn:agentauth:params:token-type:passport"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
BRIDGE_CERT_GRANT = "urn:agentauth:params:grant-type:bridge-cert"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class AgentKey:
    """The agent's identity key and DPoP key: P-256 (ES256, the default) or
    Ed25519 (proofs name it `Ed25519`, RFC 9864, or `EdDSA` with
    `ed25519_alg="EdDSA"`; client assertions use `EdDSA`)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey | None = None,
                 *, ed25519_alg: str = "Ed25519") -> None:
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        if isinstance(self.private_key, Ed25519PrivateKey):
            self.public_jwk: dict[str, Any] = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
            self.alg, self.assertion_alg = ed25519_alg, "EdDSA"
        else:
            self.public_jwk = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
            self.alg = self.assertion_alg = "ES256"
        self.public_jwk.pop("key_ops", None)
        self.jkt = jwk_thumbprint(self.public_jwk)

    @classmethod
    def load(cls, path: str) -> "AgentKey":
        """A key from a PKCS#8 PEM file (see :meth:`save`)."""
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        with open(path, "rb") as f:
            key = load_pem_private_key(f.read(), password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, Ed25519PrivateKey)):
            raise ValueError("not a P-256 or Ed25519 private key")
        return cls(key)

    def save(self, path: str) -> None:
        """Writes the private key (PKCS#8 PEM, mode 0600)."""
        import os

        from cryptography.hazmat.primitives import serialization

        pem = self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)

    def dpop_proof(self, method: str, url: str, access_token: str | None = None, nonce: str | None = None) -> str:
        """An RFC 9449 §4.2 proof for one request."""
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url, "iat": int(time.time())}
        if access_token is not None:
            claims["ath"] = ath(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        headers = {"typ": "dpop+jwt", "jwk": self.public_jwk}
        if self.alg == "Ed25519":
            return _SIGNING_JWS.encode(json.dumps(claims).encode(), self.private_key, algorithm="Ed25519", headers=headers)
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers=headers)

    def client_assertion(self, client_id: str, audience: str, kid: str | None = None) -> str:
        """RFC 7523 §2.2 `private_key_jwt` (aud: the issuer)."""
        now = int(time.time())
        claims = {"iss": client_id, "sub": client_id, "aud": audience, "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 60}
        headers = {"kid": kid} if kid else None
        return jwt.encode(claims, self.private_key, algorithm=self.assertion_alg, headers=headers)


# PyJWT signs Ed25519 as `EdDSA`; this instance also writes the RFC 9864
# name, with the same implementation.
_SIGNING_JWS = PyJWS()
_SIGNING_JWS.register_algorithm("Ed25519", OKPAlgorithm())


class TokenError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('error')}: {body.get('error_description', '')}")
        self.status = status
        self.body = body
        self.error = body.get("error")


@dataclass
class Agent:
    """An agent of agentauth: `client_id` (its agent id) and `key`.

    ```python
    agent = Agent(issuer, agent_id, key)
    token = agent.client_credentials(resource="https://mcp.example.com/mcp", scope="tools:read")
    r = agent.request("GET", "https://mcp.example.com/mcp", token)
    ```
    """

    issuer: str
    client_id: str
    key: AgentKey
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))
    nonces: dict[str, str] = field(default_factory=dict)

    @property
    def token_endpoint(self) -> str:
        return self.issuer.rstrip("/") + "/token"

    def token_request(self, form: dict[str, str], dpop: bool = True) -> dict[str, Any]:
        """POST /token with a client assertion and (by default) a DPoP
        proof, retrying once with the server's `DPoP-Nonce` (RFC 9449 §8)."""
        url = self.token_endpoint
        for _ in range(2):
            body = dict(form, client_id=self.client_id, client_assertion_type=JWT_BEARER_ASSERTION,
                        client_assertion=self.key.client_assertion(self.client_id, self.issuer))
            headers = {"DPoP": self.key.dpop_proof("POST", url, nonce=self.nonces.get(url))} if dpop else {}
            r = self.http.post(url, data=body, headers=headers)
            if "dpop-nonce" in r.headers:
                self.nonces[url] = r.headers["dpop-nonce"]
            data = r.json() if r.content else {}
            if r.status_code == 400 and data.get("error") == "use_dpop_nonce":
                continue
            if r.status_code != 200:
                raise TokenError(r.status_code, data)
            return data
        raise TokenError(r.status_code, data)

    def client_credentials(self, *, resource: str | None = None, scope: str | None = None, dpop: bool = True) -> dict[str, Any]:
        form = {"grant_type": "client_credentials"}
        if resource:
            form["resource"] = resource
        if scope:
            form["scope"] = scope
        return self.token_request(form, dpop)

    def passport(self, audience: str | None = None) -> dict[str, Any]:
        """The passport grant: a statement of who this agent is, bound to
        its key (`typ: agent-passport+jwt`)."""
        form = {"grant_type": PASSPORT_GRANT}
        if audience:
            form["audience"] = audience
        return self.token_request(form)

    def exchange(self, subject_token: str, *, subject_token_type: str = ACCESS_TOKEN_TYPE,
                 resource: str | None = None, audience: str | None = None, scope: str | None = None) -> dict[str, Any]:
        """RFC 8693 token exchange: a DPoP-bound token for `resource` that
        acts for the subject (`act` names this agent)."""
        form = {"grant_type": TOKEN_EXCHANGE_GRANT, "subject_token": subject_token,
                "subject_token_type": subject_token_type}
        for k, v in (("resource", resource), ("audience", audience), ("scope", scope)):
            if v:
                form[k] = v
        return self.token_request(form)

    def bridge_certificate(self, cert_key: Any = None, *, scope: str | None = None) -> tuple[Any, list[Any]]:
        """A bridge certificate for an Ed25519 key (generated if not
        given): a server nonce, a PKCS#10 request signed by the key with the
        nonce as its challengePassword, the bridge-cert grant. Returns the
        key and the chain (leaf first) as `cryptography` certificates."""
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding
        from cryptography.x509.oid import AttributeOID, NameOID

        cert_key = cert_key or Ed25519PrivateKey.generate()
        r = self.http.post(self.issuer.rstrip("/") + "/bridge-certs/nonce")
        r.raise_for_status()
        nonce = r.json()["c_nonce"]
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.client_id)]))
            .add_attribute(AttributeOID.CHALLENGE_PASSWORD, nonce.encode())
            .sign(cert_key, None)
        )
        form = {"grant_type": BRIDGE_CERT_GRANT, "csr": csr.public_bytes(Encoding.PEM).decode()}
        if scope:
            form["scope"] = scope
        issued = self.token_request(form, dpop=False)
        return cert_key, x509.load_pem_x509_certificates(issued["access_token"].encode())

    def ask_owner(self, *, login_hint: str, authorization_details: list[dict[str, Any]],
                  binding_message: str | None = None, scope: str | None = None,
                  resource: str | None = None) -> dict[str, Any]:
        """OpenID CIBA (poll mode): ask the agent's owner to approve exactly
        these RFC 9396 `authorization_details` (e.g. the ones an MCP server's
        -31403 error named). Returns `auth_req_id`, `expires_in`, `interval`;
        then :meth:`wait_for_approval`."""
        form = {"login_hint": login_hint, "authorization_details": json.dumps(authorization_details),
                "client_id": self.client_id, "client_assertion_type": JWT_BEARER_ASSERTION,
                "client_assertion": self.key.client_assertion(self.client_id, self.issuer)}
        for k, v in (("binding_message", binding_message), ("scope", scope), ("resource", resource)):
            if v:
                form[k] = v
        r = self.http.post(self.issuer.rstrip("/") + "/bc-authorize", data=form)
        if r.status_code != 200:
            raise TokenError(r.status_code, r.json() if r.content else {})
        started: dict[str, Any] = r.json()
        return started

    def wait_for_approval(self, started: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        """Polls the CIBA grant at the request's `interval` until the owner
        answers: the DPoP-bound token for that one action, or `TokenError`
        (`access_denied`, `expired_token`)."""
        interval = float(started.get("interval", 5))
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.token_request({"grant_type": CIBA_GRANT, "auth_req_id": started["auth_req_id"]})
            except TokenError as e:
                if e.error == "slow_down":
                    interval += 5
                elif e.error != "authorization_pending" or time.monotonic() > deadline:
                    raise
            time.sleep(interval)

    def read_login_request(self, login_request_id: str, passport: str) -> dict[str, Any]:
        """GET /login-requests/{id} with a passport naming no site: the
        site (`site.display_name`; `site.verified` only if an operator
        vouched for it), the scopes, a fresh `challenge` and `difficulty`."""
        url = f"{self.issuer.rstrip('/')}/login-requests/{login_request_id}"
        r = self.request("GET", url, {"access_token": passport, "token_type": "DPoP"})
        if r.status_code != 200:
            raise TokenError(r.status_code, r.json() if r.content else {})
        request: dict[str, Any] = r.json()
        return request

    def answer_login_request(self, login_request_id: str, *, approve: bool = True,
                             passport: str | None = None) -> dict[str, Any]:
        """Proof-of-work login, the agent's side: read the request, solve
        its challenge, approve (or deny). Returns the request as read, with
        the answer's body under `answer`."""
        passport = passport or self.passport()["access_token"]
        request = self.read_login_request(login_request_id, passport)
        url = f"{self.issuer.rstrip('/')}/login-requests/{login_request_id}/" + ("approve" if approve else "deny")
        form = {"challenge": request["challenge"]}
        if approve:
            form["nonce"] = solve_pow(request["challenge"], int(request["difficulty"]))
        r = self.request("POST", url, {"access_token": passport, "token_type": "DPoP"}, data=form)
        if r.status_code != 200:
            raise TokenError(r.status_code, r.json() if r.content else {})
        return dict(request, answer=r.json())

    def request(self, method: str, url: str, token: dict[str, Any] | str, **kw: Any) -> httpx.Response:
        """A call to a resource with the token: `DPoP` scheme and a proof
        for a DPoP-bound one (retried once with a resource's nonce)."""
        access = token if isinstance(token, str) else token["access_token"]
        bound = not isinstance(token, str) and str(token.get("token_type", "")).lower() == "dpop"
        headers = dict(kw.pop("headers", {}))
        for _ in range(2):
            if bound:
                headers["Authorization"] = f"DPoP {access}"
                headers["DPoP"] = self.key.dpop_proof(method, url, access, self.nonces.get(url))
            else:
                headers["Authorization"] = f"Bearer {access}"
            r = self.http.request(method, url, headers=headers, **kw)
            if bound and r.status_code == 401 and "dpop-nonce" in r.headers:
                self.nonces[url] = r.headers["dpop-nonce"]
                continue
            return r
        return r


def solve_pow(challenge: str, difficulty: int) -> str:
    """The proof-of-work answer: the first decimal `nonce` such that
    SHA-256(challenge || nonce) has `difficulty` leading zero bits."""
    base = challenge.encode()
    n = 0
    while True:
        nonce = str(n).encode()
        digest = int.from_bytes(hashlib.sha256(base + nonce).digest(), "big")
        if digest >> (256 - difficulty) == 0:
            return nonce.decode()
        n += 1


class DPoPAuth:
    """An `auth=` for httpx (and the `mcp` SDK's httpx2) sending a
    DPoP-bound token: `Authorization: DPoP …` and a fresh proof per
    request (htu without query, RFC 9449 §4.2)."""

    def __init__(self, key: AgentKey, access_token: str, nonce: str | None = None) -> None:
        self.key = key
        self.access_token = access_token
        self.nonce = nonce

    def __call__(self, request: Any) -> Any:
        url = request.url
        htu = f"{url.scheme}://{url.netloc.decode() if isinstance(url.netloc, bytes) else url.netloc}{url.path}"
        request.headers["Authorization"] = f"DPoP {self.access_token}"
        request.headers["DPoP"] = self.key.dpop_proof(request.method, htu, self.access_token, self.nonce)
        return request
