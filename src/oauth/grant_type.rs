//! Every `grant_type` the token endpoint knows, and the RFC 8693 token
//! types its responses name: the one home of these strings. The grants
//! themselves are in `crate::grants`; these names are here, in the leaf
//! protocol layer, because registration rules, the agent layer and the
//! metadata document refer to them too.

/// RFC 6749 §4.1.
pub const AUTHORIZATION_CODE: &str = "authorization_code";
/// RFC 6749 §6.
pub const REFRESH_TOKEN: &str = "refresh_token";
/// RFC 6749 §4.4.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 7523 §2.1 JWT bearer grant.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693 token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The agent passport grant.
pub const PASSPORT: &str = "urn:agentauth:params:grant-type:passport";
/// A site polling a proof-of-work login request it made.
pub const POW_LOGIN: &str = "urn:agentauth:params:grant-type:pow-login";
/// A bridge certificate for a key the agent proves it holds.
pub const BRIDGE_CERT: &str = "urn:agentauth:params:grant-type:bridge-cert";
/// OpenID CIBA Core §10.1: a client redeeming an approved backchannel
/// authentication request.
pub const CIBA: &str = "urn:openid:params:grant-type:ciba";

/// RFC 8693 §3 token type of an access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §2.2.1 `issued_token_type` of a bridge certificate response:
/// a PEM chain, leaf first, then the issuing epoch's CA.
pub const CERT_CHAIN_TOKEN_TYPE: &str = "urn:agentauth:params:token-type:x509-chain-pem";
