use serde_json::Value;

use crate::both;
use crate::helpers::{ISSUER, TestApp};

/// RFC 8414 §3: `issuer` is the configured string byte for byte, every
/// endpoint lives under it, and only implemented grants are advertised.
async fn metadata_issuer_is_exact_and_endpoints_are_implemented(app: TestApp) {
    let r = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let m = r.json();
    assert_eq!(m["issuer"], ISSUER);
    for (field, path) in [
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks.json"),
        ("registration_endpoint", "/register"),
        ("introspection_endpoint", "/introspect"),
        ("revocation_endpoint", "/revoke"),
        ("backchannel_authentication_endpoint", "/bc-authorize"),
    ] {
        assert_eq!(m[field], format!("{ISSUER}{path}"));
        // The endpoint exists: a GET on a POST-only route is 405, not 404.
        let status = app.get(path).await.status.as_u16();
        assert_ne!(status, 404, "{path} must be implemented");
    }
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:agentauth:params:grant-type:passport",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:agentauth:params:grant-type:pow-login",
            "urn:agentauth:params:grant-type:bridge-cert",
            "urn:openid:params:grant-type:ciba"
        ])
    );
    assert_eq!(m["authorization_endpoint"], format!("{ISSUER}/authorize"));
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    // SECURITY.md, "Metadata and JWKS".
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    let methods: Vec<&str> = m["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for method in [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "none",
    ] {
        assert!(methods.contains(&method));
    }
    let algs = m["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(
        algs.iter()
            .all(|a| a != "none" && !a.as_str().unwrap().starts_with("HS"))
    );
}
both!(metadata_issuer_is_exact_and_endpoints_are_implemented);

/// RFC 7517 / SECURITY.md, "Metadata and JWKS": public members only; kid, alg and use on
/// every key; cacheable.
async fn jwks_publishes_public_keys_only(app: TestApp) {
    let r = app.get("/jwks.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/jwk-set+json"));
    assert!(r.header("cache-control").unwrap().contains("max-age="));
    let jwks = r.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    for key in keys {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "{private} leaked");
        }
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kty"], "RSA");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
        assert!(matches!(key["n"], Value::String(_)));
    }
}
both!(jwks_publishes_public_keys_only);
