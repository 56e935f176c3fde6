//! Item 1 of issue 28: a passport is an identity credential, not an access token.
//! SECURITY.md maps each case here to the attack it covers.
//!
//! At the passport grant, an `audience` that is one of our resources
//! (registered, the default audience, the issuer) needs that resource's
//! `accept_passports`; any other site's URL and a registered client stay
//! allowed. At a resource, the kit refuses passports unless it opted in,
//! then takes only one naming it, with no scope of its own, locally and in
//! introspection mode. Passports live as long as access tokens by default.

use std::sync::Arc;

use agentauth_resource::guard::Guard;
use agentauth_resource::introspection::Introspector;
use agentauth_resource::{ProtectedResourceMetadata, ResourceError, ResourceVerifier, TokenKind};
use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};

use crate::agents::{Agent, agent};
use crate::dpop::ProofKey;
use crate::helpers::{ISSUER, TestApp, TestResponse, jwt_parts, serve_args, spawn_app_with};
use crate::resource::AsKeys;

const PASSPORT: &str = "urn:agentauth:params:grant-type:passport";
/// Registered by the test helpers (`--resource`), not accepting passports.
const MCP: &str = "https://mcp.example.com/mcp";
/// Registered in a resources file with `accept_passports = true`.
const AGENTS_API: &str = "https://agents.example/api";

/// A node whose resources file registers [`AGENTS_API`] accepting
/// passports, beside the helpers' `--resource` flags.
async fn node_with_passport_resource(app: &TestApp) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resources.toml");
    std::fs::write(
        &file,
        format!(
            "[[resource]]\nuri = \"{AGENTS_API}\"\nname = \"Agents API\"\nscopes = [\"read\"]\naccept_passports = true\n"
        ),
    )
    .unwrap();
    let mut args = serve_args();
    args.resources_file = Some(file);
    (spawn_app_with(app.backend, args).await, dir)
}

/// Asks for a passport as `agent`, bound to `key`, naming `audience`s.
async fn ask(app: &TestApp, a: &Agent, key: &ProofKey, audience: &[&str]) -> TestResponse {
    let mut pairs = vec![("grant_type", PASSPORT)];
    pairs.extend(audience.iter().map(|aud| ("audience", *aud)));
    a.token(app, &pairs, Some(&key.proof(app))).await
}

fn passport_of(r: &TestResponse) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["access_token"].as_str().unwrap().to_string()
}

/// SECURITY.md, "Passport used as an access token": an audience that is a
/// registered resource not accepting passports, in any spelling, or the
/// default audience (here the issuer) is `invalid_target`; nothing is
/// issued.
async fn passport_for_a_resource_that_refuses_passports_is_invalid_target(app: TestApp) {
    let key = ProofKey::new();
    let a = agent(&app, "alice", "read", std::slice::from_ref(&key.jwk)).await;
    for audience in [
        MCP,
        "HTTPS://MCP.example.com:443/mcp",
        "https://other.example.com/",
        ISSUER,
        &format!("{ISSUER}/"),
    ] {
        let body = ask(&app, &a, &key, &[audience])
            .await
            .assert_error(400, "invalid_target");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("does not accept passports"),
            "{audience}: {body}"
        );
    }
}
crate::both!(passport_for_a_resource_that_refuses_passports_is_invalid_target);

/// A resource whose entry says `accept_passports = true` may be named,
/// and is written in its registered spelling (the `aud` the kit compares
/// byte for byte); a site that is not one of our resources, an agent
/// audience and a registered client stay allowed.
async fn passport_audiences_that_stay_allowed(app: TestApp) {
    let (app, _dir) = node_with_passport_resource(&app).await;
    let key = ProofKey::new();
    let a = agent(&app, "alice", "read", std::slice::from_ref(&key.jwk)).await;
    let passport = passport_of(&ask(&app, &a, &key, &["https://AGENTS.example/api"]).await);
    assert_eq!(jwt_parts(&passport).1["aud"], AGENTS_API);

    let (site_client, _) = app.cc_client("").await;
    let agent_audience = format!("{ISSUER}/agents/{}", a.id);
    for audience in [
        "https://site.example/login",
        "https://mcp.example.com/elsewhere",
        site_client.as_str(),
        agent_audience.as_str(),
    ] {
        let passport = passport_of(&ask(&app, &a, &key, &[audience]).await);
        assert_eq!(jwt_parts(&passport).1["aud"], audience);
    }
    // Several sites in one passport (RFC 8693 §2.1: `audience` may
    // repeat); one that may not be named spoils the request.
    let passport =
        passport_of(&ask(&app, &a, &key, &["https://site.example/login", AGENTS_API]).await);
    assert_eq!(
        jwt_parts(&passport).1["aud"],
        json!(["https://site.example/login", AGENTS_API])
    );
    ask(&app, &a, &key, &["https://site.example/login", MCP])
        .await
        .assert_error(400, "invalid_target");
    // Still refused: a resource of the same node without the option.
    ask(&app, &a, &key, &[MCP])
        .await
        .assert_error(400, "invalid_target");
}
crate::both!(passport_audiences_that_stay_allowed);

/// SECURITY.md, "Kill switch and offline verifiers": with no
/// `--passport-ttl`, a passport lives exactly as long as an access token
/// (`exp - iat` and `expires_in`), following `--access-token-ttl`; an
/// explicit `--passport-ttl` still wins.
async fn default_passport_lifetime_is_the_access_token_lifetime(app: TestApp) {
    let key = ProofKey::new();
    let a = agent(&app, "alice", "read", std::slice::from_ref(&key.jwk)).await;
    let lifetime = |r: &TestResponse| {
        let claims = jwt_parts(&passport_of(r)).1;
        (
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            r.json()["expires_in"].as_i64().unwrap(),
        )
    };
    let ttl = app.state.config.access_token_ttl;
    assert_eq!(ttl, 900);
    assert_eq!(lifetime(&ask(&app, &a, &key, &[]).await), (ttl, ttl));

    for (access, passport, expected) in [(300, None, 300), (300, Some(120), 120)] {
        let mut args = serve_args();
        args.access_token_ttl = access;
        args.passport_ttl = passport;
        let node = spawn_app_with(app.backend, args).await;
        let a = agent(&node, "alice", "read", std::slice::from_ref(&key.jwk)).await;
        assert_eq!(
            lifetime(&ask(&node, &a, &key, &[]).await),
            (expected, expected)
        );
    }
}
crate::both!(default_passport_lifetime_is_the_access_token_lifetime);

fn request(scheme: &str, token: &str, key: &ProofKey, htu: &str, now: i64) -> HeaderMap {
    let mut claims = key.claims("POST", htu, now);
    claims["ath"] = json!(agentauth_resource::dpop::ath(token));
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("{scheme} {token}")).unwrap(),
    );
    h.insert(
        "dpop",
        HeaderValue::from_str(&key.sign(&key.header(), &claims)).unwrap(),
    );
    h
}

fn invalid_token(result: Result<agentauth_resource::Verified, ResourceError>, context: &str) {
    let err = result
        .err()
        .unwrap_or_else(|| panic!("{context}: accepted"));
    assert!(
        matches!(err, ResourceError::InvalidToken(_)),
        "{context}: {err:?}"
    );
    let (status, headers) = err.headers();
    assert_eq!(status, 401, "{context}");
    let challenges: Vec<&str> = headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        challenges[0].starts_with(r#"Bearer error="invalid_token""#)
            && challenges[1].starts_with(r#"DPoP error="invalid_token""#),
        "{context}: {challenges:?}"
    );
}

/// The kit with our real passports: by default it refuses each, with its
/// DPoP proof, whether it names the resource, another site or none; opted
/// in, it takes only the one naming it, as the agent with no scope
/// (the passport says `read`), and the proof must be by the passport's key.
async fn kit_refuses_passports_unless_the_resource_accepts_them(app: TestApp) {
    let (app, _dir) = node_with_passport_resource(&app).await;
    let key = ProofKey::new();
    let a = agent(&app, "alice", "read", std::slice::from_ref(&key.jwk)).await;
    let here = passport_of(&ask(&app, &a, &key, &[AGENTS_API]).await);
    let elsewhere = passport_of(&ask(&app, &a, &key, &["https://site.example/"]).await);
    let nowhere = passport_of(&ask(&app, &a, &key, &[]).await);
    assert_eq!(jwt_parts(&here).1["scope"], "read");

    let now = app.now();
    let default = ResourceVerifier::new(ISSUER, AGENTS_API, AsKeys(app.state.clone()));
    for (token, what) in [
        (&here, "for it"),
        (&elsewhere, "for a site"),
        (&nowhere, "no aud"),
    ] {
        let verify = |scheme| {
            default.verify_request(
                "POST",
                AGENTS_API,
                &request(scheme, token, &key, AGENTS_API, now),
                now,
            )
        };
        invalid_token(verify("DPoP"), what);
        invalid_token(verify("Bearer"), what);
    }

    let accepting =
        ResourceVerifier::new(ISSUER, AGENTS_API, AsKeys(app.state.clone())).accept_passports(true);
    for (token, what) in [(&elsewhere, "for a site"), (&nowhere, "no aud")] {
        invalid_token(
            accepting.verify_request(
                "POST",
                AGENTS_API,
                &request("DPoP", token, &key, AGENTS_API, now),
                now,
            ),
            what,
        );
    }
    let v = accepting
        .verify_request(
            "POST",
            AGENTS_API,
            &request("DPoP", &here, &key, AGENTS_API, now),
            now,
        )
        .unwrap();
    assert_eq!(v.kind, TokenKind::Passport);
    assert_eq!(v.claims.agent_id.as_deref(), Some(a.id.as_str()));
    assert_eq!(v.claims.cnf.as_ref().unwrap().jkt, key.thumbprint());
    assert_eq!(v.claims.scope, None);
    let err = agentauth_resource::verifier::require_scopes(&v.claims, &["read"]).unwrap_err();
    assert_eq!(err.headers().0, 403);
    let other = ProofKey::new();
    let err = accepting
        .verify_request(
            "POST",
            AGENTS_API,
            &request("DPoP", &here, &other, AGENTS_API, now),
            now,
        )
        .unwrap_err();
    assert!(matches!(err, ResourceError::InvalidDpopProof(_)), "{err:?}");

    // The resource's own policy is what grants scopes to an identity.
    let owner = jwt_parts(&here).1["owner"].as_str().unwrap().to_string();
    let with_policy = ResourceVerifier::new(ISSUER, AGENTS_API, AsKeys(app.state.clone()))
        .accept_passports(true)
        .passport_scopes(move |p| {
            if p.owner == owner {
                vec!["read".to_string()]
            } else {
                Vec::new()
            }
        });
    let v = with_policy
        .verify_request(
            "POST",
            AGENTS_API,
            &request("DPoP", &here, &key, AGENTS_API, now),
            now,
        )
        .unwrap();
    assert_eq!(v.claims.scope.as_deref(), Some("read"));
}
crate::both!(kit_refuses_passports_unless_the_resource_accepts_them);

/// Introspection mode against our /introspect (which answers a passport
/// naming the resource as active, `token_type` the passport's): the kit
/// refuses it unless it accepts passports, and then only the one naming
/// it, with no scope.
async fn introspection_mode_refuses_passports_the_same_way(app: TestApp) {
    let (app, _dir) = node_with_passport_resource(&app).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/introspect", listener.local_addr().unwrap());
    let router = app.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let (rs, secret) = app.cc_client("").await;
    app.set_introspects(&rs, &[AGENTS_API]).await;

    let key = ProofKey::new();
    let a = agent(&app, "alice", "read", std::slice::from_ref(&key.jwk)).await;
    let here = passport_of(&ask(&app, &a, &key, &[AGENTS_API]).await);
    let nowhere = passport_of(&ask(&app, &a, &key, &[]).await);
    let seen = app.introspect_as(&rs, &secret, &here).await;
    assert_eq!(seen["active"], true);
    assert_eq!(
        seen["token_type"],
        "urn:agentauth:params:token-type:passport"
    );

    let metadata = ProtectedResourceMetadata::new(AGENTS_API, ISSUER);
    let guard = |accept: bool| {
        Guard::new(&metadata, Arc::new(AsKeys(app.state.clone())))
            .accept_passports(accept)
            .with_introspection(Introspector::new(endpoint.clone(), &rs, &secret).unwrap())
    };
    let parts = |token: &str| {
        let mut req = axum::http::Request::post(AGENTS_API).body(()).unwrap();
        *req.headers_mut() = request("DPoP", token, &key, AGENTS_API, app.now());
        req.into_parts().0
    };
    let refusing = guard(false);
    invalid_token(refusing.check_at(&parts(&here), app.now()).await, "default");

    let accepting = guard(true);
    invalid_token(
        accepting.check_at(&parts(&nowhere), app.now()).await,
        "no aud",
    );
    let v = accepting.check_at(&parts(&here), app.now()).await.unwrap();
    assert_eq!(v.kind, TokenKind::Passport);
    assert_eq!(v.claims.scope, None);
}
crate::both!(introspection_mode_refuses_passports_the_same_way);

/// The server itself never takes a passport for an access token (explicit
/// `typ`, RFC 8725 §3.11): token exchange with the access-token type
/// refuses it, and introspection reports it as a passport, never as a
/// `Bearer` or `DPoP` token.
async fn server_never_takes_a_passport_for_an_access_token(app: TestApp) {
    let key = ProofKey::new();
    let a = agent(&app, "alice", "read", std::slice::from_ref(&key.jwk)).await;
    let passport = passport_of(&ask(&app, &a, &key, &[]).await);
    let seen: Value = app.introspect(&passport).await;
    assert_eq!(seen["active"], true);
    assert_eq!(
        seen["token_type"],
        "urn:agentauth:params:token-type:passport"
    );
    a.token(
        &app,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &passport),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            ("resource", MCP),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_request");
}
crate::both!(server_never_takes_a_passport_for_an_access_token);

/// A passport for one of our resources that does not accept passports
/// (signed before the grant refused them, say) is no credential there:
/// introspection answers `{"active": false}` to that resource, while the
/// resource that accepts passports still sees its own.
async fn introspection_answers_passports_only_to_resources_that_accept_them(app: TestApp) {
    let (app, _dir) = node_with_passport_resource(&app).await;
    let key = ProofKey::new();
    let a = agent(&app, "alice", "read", std::slice::from_ref(&key.jwk)).await;
    let here = passport_of(&ask(&app, &a, &key, &[AGENTS_API]).await);
    let mut claims = jwt_parts(&here).1;
    claims["aud"] = json!(MCP);
    claims["jti"] = json!("minted-for-mcp");
    let for_mcp = app
        .state
        .tokens
        .keys
        .current()
        .signer(app.now())
        .unwrap()
        .sign("agent-passport+jwt", &claims)
        .unwrap();
    let (mcp_rs, mcp_secret) = app.cc_client("").await;
    app.set_introspects(&mcp_rs, &[MCP]).await;
    assert_eq!(
        app.introspect_as(&mcp_rs, &mcp_secret, &for_mcp).await,
        json!({"active": false})
    );
    let (rs, secret) = app.cc_client("").await;
    app.set_introspects(&rs, &[AGENTS_API]).await;
    assert_eq!(app.introspect_as(&rs, &secret, &here).await["active"], true);
}
crate::both!(introspection_answers_passports_only_to_resources_that_accept_them);
