"""agentauth for Python: verify agentauth tokens (resource servers and MCP
servers), act as an agent, and log agents in at a site."""

from .jwks import JwksCache, VerifyingKey
from .status import StatusLists, StatusListUnavailable
from .verifier import (
    ACCESS_TOKEN_TYP,
    DPOP_TYP,
    PASSPORT_TYP,
    InsufficientScope,
    InvalidDpopProof,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    NonceKey,
    ReplayCache,
    ResourceError,
    ResourceVerifier,
    UseDpopNonce,
    Verified,
    ath,
    jwk_thumbprint,
)

__version__ = "0.1.0"

__all__ = [
    "ACCESS_TOKEN_TYP", "DPOP_TYP", "PASSPORT_TYP", "InsufficientScope", "InvalidDpopProof",
    "InvalidRequest", "InvalidToken", "JwksCache", "MissingToken", "NonceKey", "ReplayCache", "StatusListUnavailable", "StatusLists", "ResourceError",
    "ResourceVerifier", "UseDpopNonce", "Verified", "VerifyingKey", "ath", "jwk_thumbprint",
]
