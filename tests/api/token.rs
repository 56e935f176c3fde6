use axum::body::Body;
use axum::http::{Request, header};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::both;
use crate::helpers::{ISSUER, TestApp, basic, jwt_parts};

/// RFC 6749 §4.4 + RFC 9068 §2: a JWT access token with `typ: at+jwt`, the
/// required claims, signed by a key in our JWKS; `Cache-Control: no-store`.
async fn client_credentials_issues_rfc9068_access_token(app: TestApp) {
    let (id, secret) = app.cc_client("read write").await;
    let r = app.token(&id, &secret, &[("scope", "read")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read");
    assert!(
        body.get("refresh_token").is_none(),
        "RFC 6749 §4.4.3: no refresh token"
    );

    let token = body["access_token"].as_str().unwrap();
    let (header, claims) = jwt_parts(token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    for claim in [
        "iss",
        "sub",
        "aud",
        "client_id",
        "scope",
        "jti",
        "iat",
        "exp",
    ] {
        assert!(claims.get(claim).is_some(), "missing {claim}");
    }
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["aud"], ISSUER, "no resource: the default audience");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );

    // Verifies against the published JWKS with the pinned algorithm.
    let jwks: JwkSet = serde_json::from_slice(&app.get("/jwks.json").await.body).unwrap();
    let jwk = jwks
        .find(header["kid"].as_str().unwrap())
        .expect("kid published");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[ISSUER]);
    validation.set_issuer(&[ISSUER]);
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("valid signature");

    // Omitting scope grants the whole registered scope (RFC 6749 §3.3).
    let r = app.token(&id, &secret, &[]).await;
    assert_eq!(r.json()["scope"], "read write");
    assert!(
        app.audit_events_with(&["token.issued"])
            .await
            .contains(&"token.issued".to_string())
    );
}
both!(client_credentials_issues_rfc9068_access_token);

async fn client_secret_post_authenticates(app: TestApp) {
    let reg = app
        .register(serde_json::json!({
            "grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_post", "scope": "read"
        }))
        .await;
    let id = reg["client_id"].as_str().unwrap();
    let secret = reg["client_secret"].as_str().unwrap();
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", secret),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The method is pinned at registration: Basic is refused for this client.
    app.token(id, secret, &[])
        .await
        .assert_error(401, "invalid_client");
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", id),
                ("client_secret", "wrong"),
            ],
            None,
        )
        .await;
    r.assert_error(401, "invalid_client");
}
both!(client_secret_post_authenticates);

/// RFC 8707: each `resource` becomes an audience; a relative URI or one
/// with a fragment is `invalid_target`.
async fn resource_indicators_become_audience(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let r = app
        .token(&id, &secret, &[("resource", "https://mcp.example.com/mcp")])
        .await;
    assert_eq!(
        jwt_parts(r.json()["access_token"].as_str().unwrap()).1["aud"],
        "https://mcp.example.com/mcp"
    );

    let r = app
        .token(
            &id,
            &secret,
            &[
                ("resource", "https://a.example.com/"),
                ("resource", "https://b.example.com/"),
            ],
        )
        .await;
    let aud = jwt_parts(r.json()["access_token"].as_str().unwrap()).1["aud"].clone();
    assert_eq!(
        aud,
        serde_json::json!(["https://a.example.com/", "https://b.example.com/"])
    );

    for bad in ["/mcp", "mcp.example.com", "https://mcp.example.com/#frag"] {
        app.token(&id, &secret, &[("resource", bad)])
            .await
            .assert_error(400, "invalid_target");
    }
}
both!(resource_indicators_become_audience);

async fn scope_beyond_registration_is_invalid_scope(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    app.token(&id, &secret, &[("scope", "read admin")])
        .await
        .assert_error(400, "invalid_scope");
    app.token(&id, &secret, &[("scope", "read\\x")])
        .await
        .assert_error(400, "invalid_scope");
}
both!(scope_beyond_registration_is_invalid_scope);

/// RFC 6749 §5.2: a failed Basic authentication is 401 with a Basic challenge.
async fn wrong_or_unknown_client_is_invalid_client(app: TestApp) {
    let (id, _) = app.cc_client("read").await;
    for (user, pass) in [
        (id.as_str(), "wrong-secret"),
        ("unknown-client", "whatever"),
        (id.as_str(), ""),
    ] {
        let r = app.token(user, pass, &[]).await;
        r.assert_error(401, "invalid_client");
        assert!(
            r.header("www-authenticate").unwrap().starts_with("Basic"),
            "Basic challenge"
        );
    }
    let r = app
        .post_form("/token", &[("grant_type", "client_credentials")], None)
        .await;
    r.assert_error(401, "invalid_client");
    let r = app
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::AUTHORIZATION, "Basic !!!not-base64")
                .body(Body::from("grant_type=client_credentials"))
                .unwrap(),
        )
        .await;
    r.assert_error(401, "invalid_client");
}
both!(wrong_or_unknown_client_is_invalid_client);

/// RFC 6749 §2.3: one authentication method per request.
async fn two_authentication_methods_are_invalid_request(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let r = app
        .post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ],
            Some((&id, &secret)),
        )
        .await;
    r.assert_error(400, "invalid_request");
}
both!(two_authentication_methods_are_invalid_request);

/// RFC 6749 §3.2: repeated parameters, non-form bodies and oversized
/// bodies are `invalid_request`; unknown and missing grant types are named.
async fn token_endpoint_rejects_malformed_requests(app: TestApp) {
    let (id, secret) = app.cc_client("read").await;
    let auth = basic(&id, &secret);
    let send = |content_type: &'static str, body: String| {
        Request::post("/token")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::AUTHORIZATION, auth.clone())
            .body(Body::from(body))
            .unwrap()
    };
    let form = "application/x-www-form-urlencoded";
    app.send(send(
        form,
        "grant_type=client_credentials&scope=read&scope=read".into(),
    ))
    .await
    .assert_error(400, "invalid_request");
    app.send(send(
        form,
        "grant_type=client_credentials&grant_type=client_credentials".into(),
    ))
    .await
    .assert_error(400, "invalid_request");
    app.send(send(
        "application/json",
        r#"{"grant_type":"client_credentials"}"#.into(),
    ))
    .await
    .assert_error(400, "invalid_request");
    app.send(send(
        form,
        format!(
            "grant_type=client_credentials&pad={}",
            "a".repeat(20 * 1024)
        ),
    ))
    .await
    .assert_error(400, "invalid_request");
    app.send(send(form, "scope=read".into()))
        .await
        .assert_error(400, "invalid_request");
    // A grant the server has but this client is not registered for.
    app.send(send(form, "grant_type=authorization_code&code=x".into()))
        .await
        .assert_error(400, "unauthorized_client");
    for grant in ["password", "implicit", "urn:example:made-up", "token"] {
        app.send(send(form, format!("grant_type={grant}")))
            .await
            .assert_error(400, "unsupported_grant_type");
    }
    // A form with a charset parameter is still a form.
    let r = app
        .send(send(
            "application/x-www-form-urlencoded; charset=UTF-8",
            "grant_type=client_credentials".into(),
        ))
        .await;
    assert_eq!(r.status, 200);
    // Basic credentials are form-urlencoded before base64 (RFC 6749 §2.3.1).
    let r = app.token(&id, &secret, &[]).await;
    assert_eq!(r.status, 200);
}
both!(token_endpoint_rejects_malformed_requests);
