//! RFC 9728 OAuth 2.0 Protected Resource Metadata: what an MCP client
//! reads first (after a 401 names it in `resource_metadata`) to learn
//! which authorization server protects the resource and which scopes it
//! offers.

use serde::{Deserialize, Serialize};
use url::Url;

/// RFC 9728 §3: the well-known URI suffix.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// RFC 9728 §2 metadata of one protected resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtectedResourceMetadata {
    /// The resource identifier: the exact string tokens carry in `aud`.
    pub resource: String,
    /// Issuer identifiers of the authorization servers, byte for byte.
    pub authorization_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// How tokens may be sent: `header` only (RFC 6750 §2.1).
    pub bearer_methods_supported: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 9728 §2: whether only DPoP-bound tokens are accepted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dpop_bound_access_tokens_required: bool,
    /// agentauth extension (RFC 9728 §2 allows more members): what each
    /// scope lets a client do, in words for the owner's consent page.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub scope_descriptions: std::collections::BTreeMap<String, String>,
}

/// RFC 9728 §3.1: the well-known path of `resource`'s metadata.
pub fn well_known_path(resource: &str) -> Result<String, url::ParseError> {
    let url = Url::parse(resource)?;
    let path = url.path().trim_end_matches('/');
    Ok(format!("{WELL_KNOWN}{path}"))
}

/// RFC 9728 §3.1: the URL of `resource`'s metadata.
pub fn metadata_url(resource: &str) -> Result<String, url::ParseError> {
    let mut url = Url::parse(resource)?;
    url.set_path(&well_known_path(resource)?);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

impl ProtectedResourceMetadata {
    /// The metadata of `resource`, protected by `authorization_server`.
    pub fn new(resource: impl Into<String>, authorization_server: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            authorization_servers: vec![authorization_server.into()],
            scopes_supported: Vec::new(),
            resource_name: None,
            bearer_methods_supported: vec!["header".into()],
            dpop_signing_alg_values_supported: Some(
                crate::dpop::DPOP_ALGS
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
            ),
            dpop_bound_access_tokens_required: false,
            scope_descriptions: Default::default(),
        }
    }

    /// RFC 9728 §3.1: the well-known path for this resource, with the
    /// resource's own path appended (`https://mcp.example.com/mcp` →
    /// `/.well-known/oauth-protected-resource/mcp`).
    pub fn well_known_path(&self) -> Result<String, url::ParseError> {
        well_known_path(&self.resource)
    }

    /// The metadata's URL, for the `resource_metadata` challenge parameter.
    pub fn metadata_url(&self) -> Result<String, url::ParseError> {
        metadata_url(&self.resource)
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// An axum router serving the document at its well-known path and, for
    /// a resource with a path, at the bare well-known URI too (clients that
    /// ignore the path try it).
    #[cfg(feature = "axum")]
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let body = self.to_json();
        let serve = move || {
            let body = body.clone();
            async move {
                (
                    [
                        (http::header::CONTENT_TYPE, "application/json"),
                        (http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                        (http::header::CACHE_CONTROL, "public, max-age=300"),
                    ],
                    body,
                )
            }
        };
        let path = self
            .well_known_path()
            .unwrap_or_else(|_| WELL_KNOWN.to_string());
        let mut router = axum::Router::new().route(&path, axum::routing::get(serve.clone()));
        if path != WELL_KNOWN {
            router = router.route(WELL_KNOWN, axum::routing::get(serve));
        }
        router
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_paths_follow_rfc_9728() {
        let m = ProtectedResourceMetadata::new(
            "https://mcp.example.com/mcp",
            "https://auth.example.com",
        );
        assert_eq!(
            m.well_known_path().unwrap(),
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            m.metadata_url().unwrap(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        let root =
            ProtectedResourceMetadata::new("https://mcp.example.com/", "https://auth.example.com");
        assert_eq!(root.well_known_path().unwrap(), WELL_KNOWN);
    }

    #[test]
    fn serializes_what_is_set() {
        let mut m = ProtectedResourceMetadata::new(
            "https://mcp.example.com/mcp",
            "https://auth.example.com",
        );
        m.scopes_supported = vec!["tools:read".into()];
        m.resource_name = Some("Example".into());
        let v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        assert_eq!(v["resource"], "https://mcp.example.com/mcp");
        assert_eq!(v["authorization_servers"][0], "https://auth.example.com");
        assert_eq!(v["bearer_methods_supported"][0], "header");
        assert_eq!(v["scopes_supported"][0], "tools:read");
        assert!(v.get("dpop_bound_access_tokens_required").is_none());
        m.dpop_bound_access_tokens_required = true;
        assert!(
            m.to_json()
                .contains("\"dpop_bound_access_tokens_required\":true")
        );
    }
}
