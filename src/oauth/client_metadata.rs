//! RFC 7591 §2 client metadata: what a client may ask for, and the checks a
//! careful authorization server makes before it stores any of it.

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use url::Url;

use super::error::OAuthError;
use super::scope::Scope;

/// RFC 7591 §2 `token_endpoint_auth_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub const ALL: [&'static str; 4] = [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "none" => Self::None,
            "client_secret_basic" => Self::ClientSecretBasic,
            "client_secret_post" => Self::ClientSecretPost,
            "private_key_jwt" => Self::PrivateKeyJwt,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

use super::grant_type::{AUTHORIZATION_CODE, REFRESH_TOKEN};

/// Which grant types a client may register, and each grant's own rule for
/// the clients that register it. The token endpoint's grant registry
/// implements it, so registration accepts exactly the grants it runs.
pub trait GrantRules {
    fn supports(&self, grant_type: &str) -> bool;
    /// `Err(reason)` when a client with `metadata` may not use `grant_type`.
    fn check_client(&self, grant_type: &str, metadata: &ClientMetadata) -> Result<(), String>;
    /// The grants an agent's client is registered with.
    fn agent_grants(&self) -> Vec<&'static str>;
}

fn unsupported_grant(text: &str) -> OAuthError {
    OAuthError::invalid_client_metadata(match text {
        "implicit" => "the implicit grant is not allowed (OAuth 2.1)".to_string(),
        "password" => "the password grant is not allowed (OAuth 2.1)".to_string(),
        other => format!("grant type {other:?} is not supported by this server"),
    })
}

/// JWS algorithms accepted for `private_key_jwt` client assertions. MACs
/// and `none` are never accepted.
pub const CLIENT_ASSERTION_ALGS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];

/// Client metadata as a client sends it (RFC 7591 §2). Unknown members are
/// ignored (§2), and `client_id`/`client_secret` are never taken from it (§3.1).
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadataRequest {
    pub redirect_uris: Option<Vec<String>>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub scope: Option<String>,
    pub contacts: Option<Vec<String>>,
    pub tos_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub jwks_uri: Option<String>,
    pub jwks: Option<serde_json::Value>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
    pub token_endpoint_auth_signing_alg: Option<String>,
    pub dpop_bound_access_tokens: Option<bool>,
    /// OpenID Connect Registration §2 `application_type`: `native` or `web`.
    pub application_type: Option<String>,
    /// Only from a client ID metadata document: the other methods the
    /// client may authenticate with (a widely used MCP client declares
    /// `["none", "private_key_jwt"]`). Ignored at `/register`.
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// OpenID CIBA Core §4: `poll` or `ping` (`push` is not offered).
    pub backchannel_token_delivery_mode: Option<String>,
    pub backchannel_client_notification_endpoint: Option<String>,
    /// Signed authentication requests and user codes are not offered;
    /// registering them is refused rather than ignored.
    pub backchannel_authentication_request_signing_alg: Option<String>,
    pub backchannel_user_code_parameter: Option<bool>,
    /// Only meaningful in an RFC 7592 update, where it must match.
    pub client_id: Option<String>,
}

/// Validated client metadata, as stored and as returned to the client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwkSet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_signing_alg: Option<String>,
    #[serde(default)]
    pub dpop_bound_access_tokens: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_type: Option<ApplicationType>,
    /// Methods accepted besides `token_endpoint_auth_method` (metadata
    /// documents only; never a shared-secret method).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_auth_methods: Vec<AuthMethod>,
    /// OpenID CIBA Core §4, for clients registered for the CIBA grant
    /// (`poll` when they named none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_token_delivery_mode: Option<DeliveryMode>,
    /// Ping mode: where the server notifies the client (https, fetched
    /// through the SSRF-guarded fetcher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_client_notification_endpoint: Option<String>,
}

/// OpenID CIBA Core §5: how a client learns that its request was
/// answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    /// The client polls the token endpoint.
    Poll,
    /// The server calls the client's notification endpoint; the client
    /// then asks the token endpoint once.
    Ping,
}

/// OpenID Connect Registration §2 `application_type`. A `web` client
/// redirects only to https URLs; a `native` one may also use loopback http
/// (RFC 8252 §7.3) and private-use schemes (§7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationType {
    Native,
    Web,
}

/// What the server allows, for validation.
pub struct RegistrationPolicy<'a> {
    pub scopes_supported: Option<&'a Scope>,
    /// The grants this server runs, with their registration rules.
    pub grants: &'a dyn GrantRules,
    /// Allows http `jwks_uri` (tests only).
    pub insecure_fetch: bool,
}

const MAX_URI_LEN: usize = 2048;
const MAX_TEXT_LEN: usize = 256;
const MAX_LIST_LEN: usize = 16;

impl ClientMetadata {
    pub fn scope(&self) -> Scope {
        Scope::parse(&self.scope).unwrap_or_default()
    }

    /// Whether the client may authenticate with `method`.
    pub fn accepts_auth_method(&self, method: AuthMethod) -> bool {
        self.token_endpoint_auth_method == method || self.other_auth_methods.contains(&method)
    }

    pub fn allows_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    /// RFC 7591 §2 and §5: validate a registration or update request.
    pub fn validate(
        req: ClientMetadataRequest,
        policy: &RegistrationPolicy<'_>,
    ) -> Result<Self, OAuthError> {
        let token_endpoint_auth_method = match req.token_endpoint_auth_method.as_deref() {
            None => AuthMethod::ClientSecretBasic,
            Some(m) => AuthMethod::parse(m).ok_or_else(|| {
                OAuthError::invalid_client_metadata(format!(
                    "token_endpoint_auth_method must be one of {}",
                    AuthMethod::ALL.join(", ")
                ))
            })?,
        };

        let requested_grants = req
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".into()]);
        bounded_list("grant_types", &requested_grants)?;
        let mut grant_types: Vec<String> = Vec::new();
        for g in requested_grants {
            if !policy.grants.supports(&g) {
                return Err(unsupported_grant(&g));
            }
            if !grant_types.contains(&g) {
                grant_types.push(g);
            }
        }
        if grant_types.is_empty() {
            return Err(OAuthError::invalid_client_metadata(
                "grant_types must not be empty",
            ));
        }

        // RFC 7591 §2.1: response_types and grant_types must agree. Only
        // "code" exists in OAuth 2.1, and only with authorization_code.
        let code_flow = grant_types.iter().any(|g| g == AUTHORIZATION_CODE);
        // Issue 12 item 8: a public client of the code flow also gets
        // refresh_token (rotated on every use, as the MCP authorization
        // spec asks of public clients); some MCP clients refuse a
        // registration response without it.
        if code_flow
            && token_endpoint_auth_method == AuthMethod::None
            && policy.grants.supports(REFRESH_TOKEN)
            && !grant_types.iter().any(|g| g == REFRESH_TOKEN)
        {
            grant_types.push(REFRESH_TOKEN.to_string());
        }
        let response_types = req.response_types.unwrap_or_else(|| {
            if code_flow {
                vec!["code".into()]
            } else {
                Vec::new()
            }
        });
        if let Some(bad) = response_types.iter().find(|r| r.as_str() != "code") {
            return Err(OAuthError::invalid_client_metadata(format!(
                "response_type {bad:?} is not supported (only \"code\")"
            )));
        }
        if code_flow == response_types.is_empty() {
            return Err(OAuthError::invalid_client_metadata(
                "response_type \"code\" and the authorization_code grant go together",
            ));
        }
        let application_type = match req.application_type.as_deref() {
            None => None,
            Some("native") => Some(ApplicationType::Native),
            Some("web") => Some(ApplicationType::Web),
            Some(other) => {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "application_type {other:?} must be \"native\" or \"web\""
                )));
            }
        };
        let redirect_uris = req.redirect_uris.unwrap_or_default();
        bounded_list("redirect_uris", &redirect_uris)?;
        for uri in &redirect_uris {
            validate_redirect_uri(uri).map_err(OAuthError::invalid_redirect_uri)?;
            if application_type == Some(ApplicationType::Web) && !uri.starts_with("https://") {
                return Err(OAuthError::invalid_redirect_uri(format!(
                    "redirect_uri {uri:?}: a web application redirects only to https URLs"
                )));
            }
        }
        if code_flow && redirect_uris.is_empty() {
            return Err(OAuthError::invalid_redirect_uri(
                "the authorization_code grant needs redirect_uris",
            ));
        }

        let scope = match req.scope.as_deref() {
            Some(text) => {
                let scope = Scope::parse(text)
                    .map_err(|e| OAuthError::invalid_client_metadata(e.to_string()))?;
                if let Some(supported) = policy.scopes_supported
                    && let Some(extra) = scope.missing_from(supported).next()
                {
                    return Err(OAuthError::invalid_client_metadata(format!(
                        "scope {extra:?} is not offered by this server"
                    )));
                }
                scope
            }
            None => policy.scopes_supported.cloned().unwrap_or_default(),
        };

        let client_uri = req
            .client_uri
            .map(|u| https_uri("client_uri", u, None))
            .transpose()?;
        let home = client_uri.as_deref().and_then(|u| Url::parse(u).ok());
        let logo_uri = req
            .logo_uri
            .map(|u| https_uri("logo_uri", u, home.as_ref()))
            .transpose()?;
        let tos_uri = req
            .tos_uri
            .map(|u| https_uri("tos_uri", u, home.as_ref()))
            .transpose()?;
        let policy_uri = req
            .policy_uri
            .map(|u| https_uri("policy_uri", u, home.as_ref()))
            .transpose()?;

        let contacts = req.contacts.unwrap_or_default();
        bounded_list("contacts", &contacts)?;
        for c in &contacts {
            bounded_text("contacts", c)?;
        }
        for (field, value) in [
            ("client_name", &req.client_name),
            ("software_id", &req.software_id),
            ("software_version", &req.software_version),
        ] {
            if let Some(v) = value {
                bounded_text(field, v)?;
            }
        }

        if let Some(alg) = &req.token_endpoint_auth_signing_alg
            && !CLIENT_ASSERTION_ALGS.contains(&alg.as_str())
        {
            return Err(OAuthError::invalid_client_metadata(format!(
                "token_endpoint_auth_signing_alg must be one of {}",
                CLIENT_ASSERTION_ALGS.join(", ")
            )));
        }

        if req.jwks.is_some() && req.jwks_uri.is_some() {
            return Err(OAuthError::invalid_client_metadata(
                "jwks and jwks_uri are mutually exclusive (RFC 7591 §2)",
            ));
        }
        let jwks = req.jwks.map(validate_jwks).transpose()?;
        let jwks_uri = req
            .jwks_uri
            .map(|u| fetchable_uri("jwks_uri", u, policy.insecure_fetch))
            .transpose()?;
        if token_endpoint_auth_method == AuthMethod::PrivateKeyJwt
            && jwks.is_none()
            && jwks_uri.is_none()
        {
            return Err(OAuthError::invalid_client_metadata(
                "private_key_jwt requires jwks or jwks_uri",
            ));
        }

        let ciba = grant_types
            .iter()
            .any(|g| g == crate::oauth::grant_type::CIBA);
        let (backchannel_token_delivery_mode, backchannel_client_notification_endpoint) =
            backchannel(
                ciba,
                req.backchannel_token_delivery_mode.as_deref(),
                req.backchannel_client_notification_endpoint,
                policy.insecure_fetch,
            )?;
        if req.backchannel_authentication_request_signing_alg.is_some() {
            return Err(OAuthError::invalid_client_metadata(
                "signed backchannel authentication requests are not supported",
            ));
        }
        if req.backchannel_user_code_parameter == Some(true) {
            return Err(OAuthError::invalid_client_metadata(
                "backchannel user codes are not supported",
            ));
        }

        let metadata = Self {
            redirect_uris,
            token_endpoint_auth_method,
            grant_types,
            response_types,
            client_name: req.client_name,
            client_uri,
            logo_uri,
            scope: scope.to_string(),
            contacts,
            tos_uri,
            policy_uri,
            jwks_uri,
            jwks,
            software_id: req.software_id,
            software_version: req.software_version,
            token_endpoint_auth_signing_alg: req.token_endpoint_auth_signing_alg,
            dpop_bound_access_tokens: req.dpop_bound_access_tokens.unwrap_or(false),
            application_type,
            other_auth_methods: Vec::new(),
            backchannel_token_delivery_mode,
            backchannel_client_notification_endpoint,
        };
        // Each grant's own rule for the clients that use it.
        for g in &metadata.grant_types {
            policy
                .grants
                .check_client(g, &metadata)
                .map_err(OAuthError::invalid_client_metadata)?;
        }
        Ok(metadata)
    }
}

fn bounded_list(field: &str, list: &[String]) -> Result<(), OAuthError> {
    if list.len() > MAX_LIST_LEN {
        return Err(OAuthError::invalid_client_metadata(format!(
            "{field} has more than {MAX_LIST_LEN} entries"
        )));
    }
    Ok(())
}

fn bounded_text(field: &str, text: &str) -> Result<(), OAuthError> {
    if text.len() > MAX_TEXT_LEN || text.chars().any(char::is_control) {
        return Err(OAuthError::invalid_client_metadata(format!(
            "{field} must be at most {MAX_TEXT_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// A human-facing URI (`client_uri`, `logo_uri`, …): https, and on the
/// client's own host when `client_uri` names one (RFC 7591 §5). These are
/// self-asserted and never fetched by the server.
fn https_uri(field: &str, uri: String, home: Option<&Url>) -> Result<String, OAuthError> {
    let bad = || {
        OAuthError::invalid_client_metadata(format!(
            "{field} must be an https URL on the client's own host"
        ))
    };
    if uri.len() > MAX_URI_LEN {
        return Err(bad());
    }
    let url = Url::parse(&uri).map_err(|_| bad())?;
    if url.scheme() != "https"
        || url.host_str().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(bad());
    }
    if let (Some(home), Some(host)) = (home.and_then(Url::host_str), url.host_str()) {
        let same_site = host == home || host.ends_with(&format!(".{home}"));
        if !same_site {
            return Err(bad());
        }
    }
    Ok(uri)
}

/// OpenID CIBA Core §4 (Registration): the delivery mode of a client
/// registered for the CIBA grant, and its notification endpoint (ping
/// only, fetched like `jwks_uri`).
fn backchannel(
    ciba: bool,
    mode: Option<&str>,
    endpoint: Option<String>,
    insecure: bool,
) -> Result<(Option<DeliveryMode>, Option<String>), OAuthError> {
    let mode = match (ciba, mode) {
        (false, None) if endpoint.is_none() => return Ok((None, None)),
        (false, _) => {
            return Err(OAuthError::invalid_client_metadata(format!(
                "backchannel delivery is for clients registered for the {} grant",
                crate::oauth::grant_type::CIBA
            )));
        }
        (true, None | Some("poll")) => DeliveryMode::Poll,
        (true, Some("ping")) => DeliveryMode::Ping,
        (true, Some(other)) => {
            return Err(OAuthError::invalid_client_metadata(format!(
                "backchannel_token_delivery_mode {other:?} is not supported (poll or ping)"
            )));
        }
    };
    let endpoint = match (mode, endpoint) {
        (DeliveryMode::Ping, Some(uri)) => Some(fetchable_uri(
            "backchannel_client_notification_endpoint",
            uri,
            insecure,
        )?),
        (DeliveryMode::Ping, None) => {
            return Err(OAuthError::invalid_client_metadata(
                "ping mode needs a backchannel_client_notification_endpoint",
            ));
        }
        (DeliveryMode::Poll, Some(_)) => {
            return Err(OAuthError::invalid_client_metadata(
                "backchannel_client_notification_endpoint is for ping mode only",
            ));
        }
        (DeliveryMode::Poll, None) => None,
    };
    Ok((Some(mode), endpoint))
}

/// A URI the server will fetch (`jwks_uri`): https only, no userinfo, no
/// fragment. Where it resolves is checked at fetch time.
fn fetchable_uri(field: &str, uri: String, insecure: bool) -> Result<String, OAuthError> {
    let bad = || {
        OAuthError::invalid_client_metadata(format!(
            "{field} must be an https URL without userinfo or fragment"
        ))
    };
    if uri.len() > MAX_URI_LEN {
        return Err(bad());
    }
    let url = Url::parse(&uri).map_err(|_| bad())?;
    let scheme_ok = url.scheme() == "https" || (insecure && url.scheme() == "http");
    if !scheme_ok
        || url.host_str().is_none()
        || !url.username().is_empty()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(uri)
}

/// RFC 7591 §2 `jwks`: public keys only, of types we can verify.
fn validate_jwks(value: serde_json::Value) -> Result<JwkSet, OAuthError> {
    let bad = |why: &str| OAuthError::invalid_client_metadata(format!("jwks: {why}"));
    let private_members = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"];
    let keys = value
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| bad("must be an object with a keys array"))?;
    if keys.is_empty() || keys.len() > 8 {
        return Err(bad("must hold between 1 and 8 keys"));
    }
    for key in keys {
        if private_members.iter().any(|m| key.get(m).is_some()) {
            return Err(bad("must contain public keys only"));
        }
    }
    let set: JwkSet = serde_json::from_value(value).map_err(|e| bad(&e.to_string()))?;
    for jwk in &set.keys {
        check_public_jwk(jwk).map_err(bad)?;
    }
    Ok(set)
}

pub use agentauth_resource::jwk::check_public_jwk;

/// RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §2.1: a redirect URI the server
/// can match exactly and that cannot be bent into an open redirect.
pub fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err("redirect_uri is too long".into());
    }
    if uri.contains('#') {
        return Err(format!("redirect_uri {uri:?} must not contain a fragment"));
    }
    if uri.contains('*') {
        return Err(format!("redirect_uri {uri:?} must not contain a wildcard"));
    }
    let lower = uri.to_ascii_lowercase();
    if lower.contains("/../")
        || lower.ends_with("/..")
        || lower.contains("/./")
        || lower.contains("..;")
        || lower.contains("%2e")
    {
        return Err(format!(
            "redirect_uri {uri:?} must not contain dot segments"
        ));
    }
    let url =
        Url::parse(uri).map_err(|_| format!("redirect_uri {uri:?} is not an absolute URI"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("redirect_uri {uri:?} must not contain userinfo"));
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(()),
        "http" => match url.host_str() {
            Some("127.0.0.1" | "[::1]" | "localhost") => Ok(()),
            _ => Err(format!(
                "redirect_uri {uri:?}: http is allowed only for loopback addresses (RFC 8252 §7.3)"
            )),
        },
        "https" => Err(format!("redirect_uri {uri:?} has no host")),
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(format!(
            "redirect_uri {uri:?}: use https, http on loopback, or a private-use scheme in reverse-domain form (RFC 8252 §7.1)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris() {
        for ok in [
            "https://app.example.com/cb",
            "http://127.0.0.1/cb",
            "http://127.0.0.1:53111/cb",
            "http://[::1]:8080/cb",
            "http://localhost:3000/callback",
            "com.example.app:/oauth2redirect",
        ] {
            assert!(validate_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://app.example.com/cb#x",
            "http://app.example.com/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://*.example.com/cb",
            "https://a@b@evil.com/cb",
            "https://user@app.example.com/cb",
            "https://app.example.com/a/../cb",
            "https://app.example.com/a/..;/cb",
            "https://app.example.com/%2e%2e/cb",
            "/relative",
            "myapp:/cb",
        ] {
            assert!(validate_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    /// The grants these cases name, each allowed to any client: the
    /// grants' own rules are the grants' tests (oauth depends on nothing
    /// above it, scripts/rooms).
    struct Grants;

    impl GrantRules for Grants {
        fn supports(&self, grant_type: &str) -> bool {
            ["authorization_code", "refresh_token", "client_credentials"].contains(&grant_type)
        }

        fn check_client(&self, _: &str, _: &ClientMetadata) -> Result<(), String> {
            Ok(())
        }

        fn agent_grants(&self) -> Vec<&'static str> {
            vec!["client_credentials"]
        }
    }

    fn policy() -> RegistrationPolicy<'static> {
        RegistrationPolicy {
            scopes_supported: None,
            insecure_fetch: false,
            grants: &Grants,
        }
    }

    #[test]
    fn refuses_password_and_implicit() {
        for g in ["password", "implicit"] {
            let req = ClientMetadataRequest {
                grant_types: Some(vec![g.into()]),
                ..Default::default()
            };
            let err = ClientMetadata::validate(req, &policy()).unwrap_err();
            assert_eq!(err.error, "invalid_client_metadata");
        }
    }

    #[test]
    fn private_key_jwt_needs_keys_and_rejects_private_ones() {
        let req = ClientMetadataRequest {
            grant_types: Some(vec!["client_credentials".into()]),
            token_endpoint_auth_method: Some("private_key_jwt".into()),
            ..Default::default()
        };
        assert!(ClientMetadata::validate(req, &policy()).is_err());
        let req = ClientMetadataRequest {
            grant_types: Some(vec!["client_credentials".into()]),
            token_endpoint_auth_method: Some("private_key_jwt".into()),
            jwks: Some(serde_json::json!({"keys":[{"kty":"oct","k":"c2VjcmV0"}]})),
            ..Default::default()
        };
        assert!(ClientMetadata::validate(req, &policy()).is_err());
    }
}

/// RFC 6749 §3.1.2.3 exact matching, with RFC 8252 §7.3's exception for
/// loopback redirects, as real clients need it: for `http` on a loopback
/// host (`127.0.0.1` or another 127/8 literal, `[::1]`, `localhost`) any
/// port and any of those hosts match (Codex registers `127.0.0.1` and
/// sends `localhost`; Claude Code registers both without a port and
/// listens on an ephemeral one). The scheme and everything after the
/// host and port (path, query) still match byte for byte; every other
/// redirect URI matches only exactly.
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    match (loopback_rest(registered), loopback_rest(requested)) {
        (Some(reg), Some(req)) => reg == req && Url::parse(requested).is_ok(),
        _ => false,
    }
}

/// For an `http` URL on a loopback host, what follows its host and port
/// (an empty path written `/`), compared raw so that no normalization
/// (case, dot segments, encoding) can make two of them equal.
fn loopback_rest(raw: &str) -> Option<String> {
    let rest = raw.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.ends_with(']') => {
            port.parse::<u16>().ok()?;
            host
        }
        _ => authority,
    };
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    Some(match tail.starts_with('/') {
        true => tail.to_string(),
        false => format!("/{tail}"),
    })
}

#[cfg(test)]
mod redirect_match_tests {
    use super::redirect_uri_matches as m;

    #[test]
    fn exact_except_loopback_port() {
        assert!(m(
            "https://app.example.com/cb",
            "https://app.example.com/cb"
        ));
        for bad in [
            "https://app.example.com/cb/",
            "https://APP.example.com/cb",
            "https://app.example.com/CB",
            "https://app.example.com/cb?x=1",
            "https://evil.app.example.com/cb",
            "https://app.example.com/cb#f",
            "https://app.example.com/a/../cb",
        ] {
            assert!(!m("https://app.example.com/cb", bad), "{bad}");
        }
        assert!(m("http://127.0.0.1/cb", "http://127.0.0.1:53111/cb"));
        assert!(m("http://127.0.0.1:8080/cb", "http://127.0.0.1:53111/cb"));
        assert!(m("http://[::1]/cb", "http://[::1]:4000/cb"));
        assert!(!m("http://127.0.0.1/cb", "http://127.0.0.1:53111/cb?x=1"));
        // Issue 12 item 9: `localhost` varies its port like the IP literals
        // (RFC 8252 §7.3 spirit); issue 30 item 2: and the three loopback
        // hosts stand for one another (Codex, Claude Code).
        assert!(m(
            "http://localhost/callback",
            "http://localhost:53111/callback"
        ));
        assert!(m("http://localhost:3000/cb", "http://localhost:53111/cb"));
        assert!(m("http://127.0.0.1/cb", "http://localhost:53111/cb"));
        assert!(m("http://localhost/cb", "http://127.0.0.1:53111/cb"));
        assert!(m("http://127.0.0.1:8080/cb", "http://[::1]:53111/cb"));
        assert!(m("http://localhost", "http://127.0.0.1:9/"));
        for bad in [
            "http://localhost.evil.com:53111/cb",
            "http://127.0.0.1.evil.com/cb",
            "http://user@localhost:53111/cb",
            "http://localhost:53111@evil.com/cb",
            "http://LOCALHOST:53111/cb",
            "http://0x7f.0.0.1:53111/cb",
            "http://localhost:99999/cb",
            "http://localhost:/cb",
            "http://[::ffff:127.0.0.1]:53111/cb",
            "http://192.168.1.1:53111/cb",
        ] {
            assert!(!m("http://localhost/cb", bad), "{bad}");
        }
        assert!(!m(
            "http://localhost/cb",
            "http://localhost.evil.com:53111/cb"
        ));
        assert!(!m("http://localhost/cb", "http://localhost:53111/cb/x"));
        assert!(!m("http://localhost/cb", "https://localhost:53111/cb"));
        assert!(!m("http://127.0.0.1/cb", "http://127.0.0.1:53111/cb/"));
    }
}
