use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::both;
use crate::helpers::{Backend, ISSUER, TestApp, jwt_parts, spawn_app};

/// RFC 7662 §2.2: an active token's claims, for the resource it is for.
async fn introspection_reports_active_token(app: TestApp) {
    let (id, secret) = app.cc_client("read write").await;
    let r = app
        .token(
            &id,
            &secret,
            &[("scope", "read"), ("resource", "https://mcp.example.com/")],
        )
        .await;
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    let (rs_id, rs_secret) = app.cc_client("").await;
    app.set_introspects(&rs_id, &["https://mcp.example.com/"])
        .await;
    let r = app
        .post_form(
            "/introspect",
            &[("token", &token), ("token_type_hint", "access_token")],
            Some((&rs_id, &rs_secret)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let i = r.json();
    assert_eq!(i["active"], true);
    assert_eq!(i["client_id"], id.as_str());
    assert_eq!(i["sub"], id.as_str());
    assert_eq!(i["scope"], "read");
    assert_eq!(i["aud"], "https://mcp.example.com/");
    assert_eq!(i["iss"], ISSUER);
    assert_eq!(i["token_type"], "Bearer");
    let (_, claims) = jwt_parts(&token);
    assert_eq!(i["jti"], claims["jti"]);
    assert_eq!(i["exp"], claims["exp"]);
}
both!(introspection_reports_active_token);

/// SECURITY.md, "Introspection and revocation": no client authentication is 401. RFC 6749 §5.2: a
/// `Basic` challenge only when the client used the Authorization header
/// (issue 12 item 10: strict JS clients otherwise hide the JSON body).
async fn introspection_requires_client_authentication(app: TestApp) {
    let (_, _, token) = app.access_token("read").await;
    let r = app
        .post_form("/introspect", &[("token", &token)], None)
        .await;
    r.assert_error(401, "invalid_client");
    assert_eq!(r.header("www-authenticate"), None);
    let r = app
        .post_form(
            "/introspect",
            &[("token", &token)],
            Some(("nobody", "nothing")),
        )
        .await;
    let unknown = r.assert_error(401, "invalid_client");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Basic ")),
        "Basic challenge after Basic credentials"
    );
    // A known client with the wrong method gets the very same answer as an
    // unknown one: no client-id oracle.
    let (id, _) = app.cc_client("read").await;
    let r = app
        .post_form(
            "/introspect",
            &[
                ("token", &token),
                ("client_id", &id),
                ("client_secret", "x"),
            ],
            None,
        )
        .await;
    assert_eq!(r.assert_error(401, "invalid_client"), unknown);
    assert_eq!(r.header("www-authenticate"), None);
    let (id, secret) = app.cc_client("read").await;
    app.post_form("/introspect", &[], Some((&id, &secret)))
        .await
        .assert_error(400, "invalid_request");
}
both!(introspection_requires_client_authentication);

/// SECURITY.md, "Introspection and revocation": expired, garbage, foreign and alg-confused tokens are
/// exactly `{"active":false}`.
async fn introspection_reports_inactive_exactly(app: TestApp) {
    let (_, _, token) = app.access_token("read").await;
    let kid = jwt_parts(&token).0["kid"].as_str().unwrap().to_string();
    let (_, claims) = jwt_parts(&token);

    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(kid.clone());
    let jwks = app.get("/jwks.json").await.body;
    let hs256_with_public_key =
        jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&jwks)).unwrap();

    let other = spawn_app(Backend::Sqlite).await;
    let (_, _, foreign) = other.access_token("read").await;

    let mut unsigned_parts: Vec<&str> = token.split('.').collect();
    unsigned_parts[2] = "";
    let stripped = unsigned_parts.join(".");
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0";
    let alg_none = format!("{none_header}.{}.", token.split('.').nth(1).unwrap());

    for garbage in [
        "garbage",
        "a.b.c",
        "",
        &hs256_with_public_key,
        &foreign,
        &stripped,
        &alg_none,
    ] {
        if garbage.is_empty() {
            continue;
        }
        assert_eq!(
            app.introspect(garbage).await,
            json!({"active": false}),
            "{garbage}"
        );
    }

    assert_eq!(app.introspect(&token).await["active"], true);
    app.clock.advance(901);
    assert_eq!(
        app.introspect(&token).await,
        json!({"active": false}),
        "expired"
    );
}
both!(introspection_reports_inactive_exactly);

/// RFC 7009 §2.1–2.2: a revoked access token is inactive until it expires;
/// unknown tokens get 200; another client's token stays active.
async fn revocation_deactivates_own_tokens_only(app: TestApp) {
    let (id, secret, token) = app.access_token("read").await;
    let (_, _, other_token) = app.access_token("read").await;

    let r = app
        .post_form("/revoke", &[("token", "not-a-token")], Some((&id, &secret)))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());

    let r = app
        .post_form("/revoke", &[("token", &other_token)], Some((&id, &secret)))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.introspect(&other_token).await["active"], true);

    let r = app
        .post_form(
            "/revoke",
            &[("token", &token), ("token_type_hint", "access_token")],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.introspect(&token).await, json!({"active": false}));
    // Revoking twice is fine.
    assert_eq!(
        app.post_form("/revoke", &[("token", &token)], Some((&id, &secret)))
            .await
            .status,
        200
    );
    assert!(
        app.audit_events_with(&["token.revoked"])
            .await
            .contains(&"token.revoked".to_string())
    );

    app.post_form("/revoke", &[("token", &token)], None)
        .await
        .assert_error(401, "invalid_client");
    app.post_form("/revoke", &[("token", &token)], Some((&id, "wrong")))
        .await
        .assert_error(401, "invalid_client");
    app.post_form("/revoke", &[], Some((&id, &secret)))
        .await
        .assert_error(400, "invalid_request");
}
both!(revocation_deactivates_own_tokens_only);

/// A deleted client's tokens stop being active.
async fn tokens_of_deleted_clients_are_inactive(app: TestApp) {
    let reg = app
        .register(json!({"grant_types": ["client_credentials"], "scope": "read"}))
        .await;
    let id = reg["client_id"].as_str().unwrap();
    let r = app
        .token(id, reg["client_secret"].as_str().unwrap(), &[])
        .await;
    let token = r.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.introspect(&token).await["active"], true);
    let r = app
        .json_request(
            "DELETE",
            &format!("/register/{id}"),
            &json!({}),
            reg["registration_access_token"].as_str(),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(app.introspect(&token).await, json!({"active": false}));
}
both!(tokens_of_deleted_clients_are_inactive);

/// The node-local revocation cache: while fresh it answers from memory; a
/// revocation on this node falls back to the database at once; another
/// node's revocation (a row written directly) shows after the next refresh.
async fn revocation_cache_is_fresh_or_falls_back(app: TestApp) {
    let (id, secret, token) = app.access_token("read").await;
    let (_, _, other) = app.access_token("read").await;
    let now = app.now();
    app.state
        .tokens
        .revocations
        .refresh(&app.state.db, now)
        .await
        .unwrap();
    assert_eq!(app.introspect(&token).await["active"], true);

    // Revoked here: visible at once.
    app.post_form("/revoke", &[("token", &token)], Some((&id, &secret)))
        .await;
    assert_eq!(app.introspect(&token).await, json!({"active": false}));

    // Revoked by "another node": a direct row, seen after the next refresh.
    app.state
        .tokens
        .revocations
        .refresh(&app.state.db, now)
        .await
        .unwrap();
    let claims = jwt_parts(&other).1;
    agentauth::store::revocations::revoke(
        &app.state.db,
        claims["jti"].as_str().unwrap(),
        "x",
        claims["exp"].as_i64().unwrap(),
        now,
    )
    .await
    .unwrap();
    // Until the next refresh the cache answers alone (the window is a second).
    assert_eq!(app.introspect(&other).await["active"], true);
    app.state
        .tokens
        .revocations
        .refresh(&app.state.db, now)
        .await
        .unwrap();
    assert_eq!(app.introspect(&other).await, json!({"active": false}));
    // And the first revocation is in the cache too.
    assert_eq!(app.introspect(&token).await, json!({"active": false}));
}
both!(revocation_cache_is_fresh_or_falls_back);
