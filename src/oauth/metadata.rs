//! RFC 8414 authorization server metadata. Advertises exactly what this
//! build implements; the `issuer` is the configured string, byte for byte.

use agentauth_resource::dpop::DPOP_ALGS;
use serde_json::{Value, json};

use super::client_metadata::{AuthMethod, CLIENT_ASSERTION_ALGS};
use super::scope::Scope;

/// Client authentication methods accepted at introspection: every method
/// except `none` (resource servers must authenticate).
const AUTHENTICATED_METHODS: [&str; 3] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
];

/// The ID-JAG profile of the JWT bearer grant (MCP enterprise-managed
/// authorization; draft-ietf-oauth-identity-assertion-authz-grant).
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

/// The metadata document of `issuer`; `grant_types` comes from the grant
/// registry, `scopes_supported` from the resource registry,
/// `grant_profiles` (`authorization_grant_profiles_supported`, left out
/// when empty) from the federation file, `details_types` (RFC 9396 §10
/// `authorization_details_types_supported`) from the resources file.
pub fn document(
    issuer: &str,
    scopes_supported: Option<&Scope>,
    grant_types: &[&str],
    grant_profiles: &[&str],
    details_types: &[&str],
) -> Value {
    let endpoint = |path: &str| format!("{issuer}{path}");
    let mut doc = json!({
        "issuer": issuer,
        "authorization_endpoint": endpoint("/authorize"),
        "token_endpoint": endpoint("/token"),
        "jwks_uri": endpoint("/jwks.json"),
        "registration_endpoint": endpoint("/register"),
        "introspection_endpoint": endpoint("/introspect"),
        "revocation_endpoint": endpoint("/revoke"),
        // draft-ietf-oauth-status-list §9.3: every token names its list.
        "status_list_aggregation_endpoint": endpoint("/statuslists"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        // OAuth 2.1 §4.1.1: PKCE with S256 only.
        "code_challenge_methods_supported": ["S256"],
        // RFC 9207.
        "authorization_response_iss_parameter_supported": true,
        // Client ID metadata documents (MCP authorization, 2025-11-25).
        "client_id_metadata_document_supported": true,
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": AuthMethod::ALL,
        "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": AUTHENTICATED_METHODS,
        "introspection_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        // RFC 7009 §2.1: public clients revoke their own tokens too.
        "revocation_endpoint_auth_methods_supported": AuthMethod::ALL,
        "revocation_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
        // RFC 9449 §5.1.
        "dpop_signing_alg_values_supported": DPOP_ALGS,
    });
    if let (Some(scopes), Some(obj)) = (scopes_supported, doc.as_object_mut()) {
        obj.insert(
            "scopes_supported".into(),
            json!(scopes.iter().collect::<Vec<_>>()),
        );
    }
    if let Some(obj) = doc.as_object_mut() {
        // RFC 9396 §10: listed even when empty, so that a client learns
        // that the parameter is understood.
        obj.insert(
            "authorization_details_types_supported".into(),
            json!(details_types),
        );
        if grant_types.contains(&super::grant_type::CIBA) {
            // OpenID CIBA Core §4.
            obj.insert(
                "backchannel_authentication_endpoint".into(),
                json!(endpoint("/bc-authorize")),
            );
            obj.insert(
                "backchannel_token_delivery_modes_supported".into(),
                json!(["poll", "ping"]),
            );
            obj.insert(
                "backchannel_user_code_parameter_supported".into(),
                json!(false),
            );
        }
    }
    if let (false, Some(obj)) = (grant_profiles.is_empty(), doc.as_object_mut()) {
        obj.insert(
            "authorization_grant_profiles_supported".into(),
            json!(grant_profiles),
        );
    }
    doc
}
