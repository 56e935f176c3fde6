"""The site side of proof-of-work login: ask agentauth for a login
request, learn the outcome by server-sent events or by polling `/token`,
and verify the agent's passport (and, on later requests, a DPoP proof of
its key)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import httpx

from .verifier import InvalidToken, ResourceVerifier, Verified

POW_LOGIN_GRANT = "urn:agentauth:params:grant-type:pow-login"


class LoginError(Exception):
    pass


@dataclass
class Site:
    """A site: a confidential client of agentauth allowed the pow-login
    grant (`agentauth client create --grant-type urn:agentauth:params:grant-type:pow-login`)."""

    issuer: str
    client_id: str
    client_secret: str
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    verifier: ResourceVerifier | None = None

    def __post_init__(self) -> None:
        if self.verifier is None:
            # A passport for this site names its client id in `aud`.
            self.verifier = ResourceVerifier(self.issuer, self.client_id, accept_passports=True)

    @property
    def _auth(self) -> tuple[str, str]:
        return (self.client_id, self.client_secret)

    def start_login(self, scope: str | None = None, agent: str | None = None) -> dict[str, Any]:
        """POST /login-requests → `login_request_id`, `expires_in`,
        `interval`, `events_uri`."""
        form = {k: v for k, v in (("scope", scope), ("agent", agent)) if v}
        r = self.http.post(self.issuer.rstrip("/") + "/login-requests", auth=self._auth, data=form)
        if r.status_code != 201:
            raise LoginError(f"{r.status_code}: {r.text}")
        created: dict[str, Any] = r.json()
        return created

    def wait_events(self, request: Mapping[str, Any], timeout: float = 300) -> dict[str, Any]:
        """The one `outcome` event of the request's event stream
        (`{"status": "approved", "passport": ...}` or denied/expired)."""
        with self.http.stream("GET", request["events_uri"], auth=self._auth,
                              headers={"accept": "text/event-stream"}, timeout=timeout) as r:
            if r.status_code != 200:
                raise LoginError(f"{r.status_code}: {r.read().decode()}")
            event = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "outcome":
                    outcome: dict[str, Any] = json.loads(line[5:].strip())
                    return outcome
                elif not line:
                    event = None
        raise LoginError("the stream ended without an outcome (reconnect to learn it)")

    def poll(self, request: Mapping[str, Any], timeout: float = 300) -> dict[str, Any]:
        """Polls `/token` (pow-login grant) at the request's `interval`
        until the passport comes or the request is denied or expires."""
        interval = float(request.get("interval", 5))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http.post(self.issuer.rstrip("/") + "/token", auth=self._auth,
                               data={"grant_type": POW_LOGIN_GRANT, "login_request_id": request["login_request_id"]})
            body = r.json()
            if r.status_code == 200:
                return {"status": "approved", "passport": body["access_token"]}
            error = body.get("error")
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                return {"status": {"access_denied": "denied", "expired_token": "expired"}.get(error, error), "error": error}
            time.sleep(interval)
        raise LoginError("timed out")

    def verify_passport(self, passport: str) -> dict[str, Any]:
        """The passport's claims after checking its signature (the issuer's
        JWKS), `typ: agent-passport+jwt`, `iss`, `aud` (this site), `exp`.
        The holder is proven only by a DPoP proof of `cnf.jkt`
        (:meth:`verify_request`)."""
        assert self.verifier is not None
        kind, claims = self.verifier._claims_sync(passport)
        if kind != "passport":
            raise InvalidToken("not an agent passport")
        return dict(self.verifier._check(passport, kind, claims, int(self.verifier.clock())).claims)

    def verify_request(self, method: str, url: str, authorization: str | None, dpop: str | None) -> Verified:
        """A later request of the logged-in agent: `Authorization: DPoP
        <passport>` with a proof by its key (replays refused)."""
        assert self.verifier is not None
        verified = self.verifier.verify(method, url, authorization, dpop)
        if verified.kind != "passport":
            raise InvalidToken("not an agent passport")
        return verified
