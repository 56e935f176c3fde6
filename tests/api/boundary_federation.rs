//! Items 5, 6, 7 of issue 28: single-use records outlive every leeway, identity assertions bind their resource and client, federation files that cannot work are refused at start.
//! SECURITY.md maps each case here to the attack it covers.

use std::io::Write as _;

use agentauth::state::Setup;
use agentauth::store;
use serde_json::{Value, json};

use crate::agents::{agent, set_agent_active};
use crate::dpop::ProofKey;
use crate::federation::{Federated, GRANT, bearer, ci_claims, federated};
use crate::helpers::{ISSUER, TestApp, TestResponse, jwt_parts, serve_args, spawn_pg_nodes};
use crate::private_key_jwt::client_key;

const MCP: &str = "https://mcp.example.com/mcp";
const OTHER: &str = "https://other.example.com/";
const CLIENT_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const TOKEN_URL: &str = "https://auth.example.com/token";

macro_rules! federated {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::federated(crate::helpers::Backend::Sqlite).await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::federated(crate::helpers::Backend::Postgres).await).await
            }
        }
    };
}

fn ok(r: TestResponse) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn token_claims(body: &Value) -> Value {
    jwt_parts(body["access_token"].as_str().unwrap()).1
}

/// The upkeep's purge of spent single-use rows, run now.
async fn purge(app: &TestApp) {
    store::purge_expired(&app.state.db, app.now())
        .await
        .unwrap();
}

fn description(body: &Value) -> &str {
    body["error_description"].as_str().unwrap_or_default()
}

// ---- Item 5: single-use retention -------------------------------------

/// A workload assertion is accepted up to 30 s past its `exp` (clock
/// skew with its issuer). Its spent `jti` must be kept as long: used once,
/// then, 20 s past `exp` and after a purge, replayed → `invalid_grant`
/// (the row was kept only until `exp` before, and the replay got a second
/// token). Past the leeway it is refused as expired.
async fn spent_workload_assertion_outlives_the_leeway(f: Federated) {
    let app = &f.app;
    let exp = app.now() + 60;
    let assertion = f.ci.assertion(ci_claims(app, json!({ "exp": exp })));
    ok(bearer(app, &assertion, &[("resource", MCP)]).await);

    app.clock.advance(exp + 20 - app.now());
    purge(app).await;
    let body = bearer(app, &assertion, &[("resource", MCP)])
        .await
        .assert_error(400, "invalid_grant");
    assert!(description(&body).contains("already used"), "{body}");
    // A fresh assertion as old as that one is still accepted: the replay
    // above was refused for its jti, not its age.
    let fresh =
        f.ci.assertion(ci_claims(app, json!({ "iat": exp - 60, "exp": exp })));
    ok(bearer(app, &fresh, &[("resource", MCP)]).await);

    app.clock.advance(11);
    purge(app).await;
    let body = bearer(app, &assertion, &[("resource", MCP)])
        .await
        .assert_error(400, "invalid_grant");
    assert!(description(&body).contains("expired"), "{body}");
}
federated!(spent_workload_assertion_outlives_the_leeway);

/// The same rule for an identity assertion (ID-JAG) and for a client
/// assertion (`private_key_jwt`, accepted until its `exp` exactly): each
/// replayed at the last second it is accepted, after a purge, is refused.
async fn spent_assertions_are_kept_while_they_are_accepted(f: Federated) {
    let app = &f.app;
    let (id, secret) = enterprise_client(app, "read").await;
    let exp = app.now() + 60;
    let jag = id_jag(&f, app, &id, json!({ "exp": exp }));
    ok(jag_token(app, &jag, (&id, &secret), &[]).await);

    let key = client_key("pk");
    let client = app
        .register(json!({
            "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": { "keys": [key.jwk] }, "scope": "read",
        }))
        .await["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let client_assertion = key.assertion(json!({
        "iss": client, "sub": client, "aud": ISSUER, "jti": "once",
        "iat": app.now(), "exp": exp,
    }));
    let cc = |assertion: String| async move {
        app.post_form(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("resource", MCP),
                ("client_assertion_type", CLIENT_ASSERTION),
                ("client_assertion", &assertion),
            ],
            None,
        )
        .await
    };
    ok(cc(client_assertion.clone()).await);

    // The client assertion's last second; the ID-JAG is in its leeway.
    app.clock.advance(exp - 1 - app.now());
    purge(app).await;
    cc(client_assertion)
        .await
        .assert_error(401, "invalid_client");
    app.clock.advance(30);
    purge(app).await;
    let body = jag_token(app, &jag, (&id, &secret), &[])
        .await
        .assert_error(400, "invalid_grant");
    assert!(description(&body).contains("already used"), "{body}");
}
federated!(spent_assertions_are_kept_while_they_are_accepted);

/// RFC 9449 §11.1 across nodes: a DPoP proof is accepted while its `iat`
/// is within the window (60 s) of the clock, so its spent `jti` row is
/// kept until `iat + 60`. Used at one node, replayed at the other at the
/// window's last second after a purge (the other node has no memory of
/// it): refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_dpop_jti_is_kept_for_its_whole_window() {
    let (a, b) = spawn_pg_nodes().await;
    let key = client_key("pk");
    let client = a
        .register(json!({
            "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt",
            "jwks": { "keys": [key.jwk] }, "scope": "read",
        }))
        .await["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let proof_key = ProofKey::new();
    let iat = a.now();
    let proof = proof_key.sign(
        &proof_key.header(),
        &proof_key.claims("POST", TOKEN_URL, iat),
    );
    let assertion = |app: &TestApp| {
        key.assertion(json!({
            "iss": client, "sub": client, "aud": ISSUER,
            "jti": agentauth::crypto::random_id().unwrap(),
            "iat": app.now(), "exp": app.now() + 60,
        }))
    };
    async fn cc(app: &TestApp, assertion: String, proof: &str) -> TestResponse {
        app.post_form_with_dpop(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("resource", MCP),
                ("client_assertion_type", CLIENT_ASSERTION),
                ("client_assertion", &assertion),
            ],
            proof,
        )
        .await
    }
    ok(cc(&a, assertion(&a), &proof).await);
    a.clock.advance(60);
    purge(&a).await;
    let body = cc(&b, assertion(&b), &proof)
        .await
        .assert_error(400, "invalid_dpop_proof");
    assert!(description(&body).contains("already used"), "{body}");
}

// ---- Item 6: identity assertions (ID-JAG) -----------------------------

/// A client registered for the JWT bearer grant with `scope`.
async fn enterprise_client(app: &TestApp, scope: &str) -> (String, String) {
    let reg = app
        .register(
            json!({"client_name": "enterprise app", "grant_types": [GRANT],
                         "token_endpoint_auth_method": "client_secret_basic", "scope": scope}),
        )
        .await;
    (
        reg["client_id"].as_str().unwrap().to_string(),
        reg["client_secret"].as_str().unwrap().to_string(),
    )
}

/// An ID-JAG for alice, issued to `client_id` for MCP with scope `read`;
/// `extra` overrides claims (null removes one).
fn id_jag(f: &Federated, app: &TestApp, client_id: &str, extra: Value) -> String {
    let mut claims = json!({
        "iss": "https://idp.example", "aud": ISSUER, "sub": "u-123",
        "email": "alice@example.com", "client_id": client_id, "scope": "read",
        "resource": MCP, "jti": agentauth::crypto::random_id().unwrap(),
        "iat": app.now(), "exp": app.now() + 300,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    f.idp.sign_typed("oauth-id-jag+jwt", claims)
}

async fn jag_token(
    app: &TestApp,
    assertion: &str,
    (id, secret): (&str, &str),
    extra: &[(&str, &str)],
) -> TestResponse {
    let mut pairs = vec![("grant_type", GRANT), ("assertion", assertion)];
    pairs.extend_from_slice(extra);
    app.post_form("/token", &pairs, Some((id, secret))).await
}

/// The token is for the resource the assertion names: asked for another
/// → `invalid_target` (a token for it before), and the refused request
/// does not spend the assertion; asked for none → the assertion's. An
/// assertion naming no resource grants a token for none of them.
async fn identity_assertion_binds_its_resource(f: Federated) {
    let app = &f.app;
    let (id, secret) = enterprise_client(app, "read").await;
    let jag = id_jag(&f, app, &id, json!({}));
    let body = jag_token(app, &jag, (&id, &secret), &[("resource", OTHER)])
        .await
        .assert_error(400, "invalid_target");
    assert!(description(&body).contains(MCP), "{body}");
    jag_token(
        app,
        &jag,
        (&id, &secret),
        &[("resource", MCP), ("resource", OTHER)],
    )
    .await
    .assert_error(400, "invalid_target");
    let claims = token_claims(&ok(jag_token(app, &jag, (&id, &secret), &[]).await));
    assert_eq!(claims["aud"], MCP);

    let jag = id_jag(&f, app, &id, json!({}));
    let claims = token_claims(&ok(jag_token(
        app,
        &jag,
        (&id, &secret),
        &[("resource", MCP)],
    )
    .await));
    assert_eq!(claims["aud"], MCP);

    let unbound = id_jag(&f, app, &id, json!({ "resource": null }));
    jag_token(app, &unbound, (&id, &secret), &[("resource", MCP)])
        .await
        .assert_error(400, "invalid_target");
    let claims = token_claims(&ok(jag_token(app, &unbound, (&id, &secret), &[]).await));
    assert_eq!(claims["aud"], ISSUER);
}
federated!(identity_assertion_binds_its_resource);

/// The granted scope is the client's registered scope intersected with
/// the assertion's: an assertion without `scope` grants none (the client's
/// whole registered scope before); a scope asked beyond the assertion's →
/// `invalid_scope`.
async fn identity_assertion_bounds_the_scope(f: Federated) {
    let app = &f.app;
    let (id, secret) = enterprise_client(app, "read write").await;
    let claims = token_claims(&ok(jag_token(
        app,
        &id_jag(&f, app, &id, json!({ "scope": "read admin" })),
        (&id, &secret),
        &[],
    )
    .await));
    assert_eq!(claims["scope"], "read");

    let body = ok(jag_token(
        app,
        &id_jag(&f, app, &id, json!({ "scope": null })),
        (&id, &secret),
        &[],
    )
    .await);
    let claims = token_claims(&body);
    assert!(claims.get("scope").is_none(), "{claims}");
    assert!(body.get("scope").is_none_or(|s| s == ""), "{body}");

    jag_token(
        app,
        &id_jag(&f, app, &id, json!({})),
        (&id, &secret),
        &[("scope", "write")],
    )
    .await
    .assert_error(400, "invalid_scope");
    jag_token(
        app,
        &id_jag(&f, app, &id, json!({ "scope": null })),
        (&id, &secret),
        &[("scope", "read")],
    )
    .await
    .assert_error(400, "invalid_scope");
}
federated!(identity_assertion_bounds_the_scope);

/// The assertion's `client_id` must be the authenticated client, its `jti`
/// is required and spent once: each otherwise → `invalid_grant`.
async fn identity_assertion_names_its_client_and_is_single_use(f: Federated) {
    let app = &f.app;
    let (id, secret) = enterprise_client(app, "read").await;
    let (other, other_secret) = enterprise_client(app, "read").await;
    for (why, jag) in [
        ("another client's", id_jag(&f, app, &other, json!({}))),
        (
            "no client_id",
            id_jag(&f, app, &id, json!({ "client_id": null })),
        ),
        ("no jti", id_jag(&f, app, &id, json!({ "jti": null }))),
        ("empty jti", id_jag(&f, app, &id, json!({ "jti": "" }))),
    ] {
        let body = jag_token(app, &jag, (&id, &secret), &[])
            .await
            .assert_error(400, "invalid_grant");
        assert!(body["error_description"].is_string(), "{why}: {body}");
    }
    let jag = id_jag(&f, app, &id, json!({}));
    jag_token(app, &jag, (&other, &other_secret), &[])
        .await
        .assert_error(400, "invalid_grant");
    ok(jag_token(app, &jag, (&id, &secret), &[]).await);
    let body = jag_token(app, &jag, (&id, &secret), &[])
        .await
        .assert_error(400, "invalid_grant");
    assert!(description(&body).contains("already used"), "{body}");
}
federated!(identity_assertion_names_its_client_and_is_single_use);

/// An agent that presents an identity assertion gets a token that names
/// it (`agent_id`, `owner`) and falls with the kill switch: inactive at
/// introspection once the agent is disabled (it stayed active before).
async fn identity_assertion_tokens_of_an_agent_fall_with_it(f: Federated) {
    let app = &f.app;
    let a = agent(app, "olga", "read", &[]).await;
    let jag = id_jag(&f, app, &a.id, json!({}));
    let body = ok(a
        .token(app, &[("grant_type", GRANT), ("assertion", &jag)], None)
        .await);
    let claims = token_claims(&body);
    let alice = store::users::by_username(&app.state.db, "alice@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claims["sub"], alice.id);
    assert_eq!(claims["client_id"], a.id);
    assert_eq!(claims["agent_id"], a.id);
    assert!(claims["owner"].is_string(), "{claims}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(app.introspect(token).await["active"], true);

    set_agent_active(app, &a.id, false).await;
    app.state.forget_agent(&a.id).await;
    assert_eq!(app.introspect(token).await["active"], false);
}
federated!(identity_assertion_tokens_of_an_agent_fall_with_it);

// ---- Item 7: federation files that cannot work --------------------------

fn config_with(federation: &str, insecure_fetch: bool) -> Result<Setup, String> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(federation.as_bytes()).unwrap();
    let mut args = serve_args();
    args.insecure_fetch = insecure_fetch;
    args.federation_file = Some(file.path().to_path_buf());
    Setup::from_args(&args).map_err(|e| e.to_string())
}

/// A `jwks_uri` the fetcher would never fetch (plain http, a private IP
/// literal, userinfo) is refused at start, naming the issuer and the rule
/// (the server started before, and every assertion then failed). Under
/// the tests-only `--insecure-fetch-for-tests-only` http is fetched, so it is accepted;
/// keys in a `jwks_file` need no fetching. The issuer itself may be http:
/// it is only compared with `iss`.
#[test]
fn federation_files_that_cannot_fetch_keys_are_refused_at_start() {
    let workload = |jwks: &str| {
        format!(
            r#"
[[workload]]
issuer = "https://ci.example"
{jwks}
[[workload.rule]]
agent = "agent-1"
claims = {{ repository = "acme/app" }}
"#
        )
    };
    for uri in [
        "http://ci.example/jwks",
        "https://127.0.0.1/jwks",
        "https://user@ci.example/jwks",
        "not a url",
    ] {
        let e = config_with(&workload(&format!("jwks_uri = {uri:?}")), false)
            .err()
            .unwrap_or_else(|| panic!("{uri} was accepted"));
        assert!(e.contains("https://ci.example"), "{e}");
        assert!(e.contains("https"), "{e}");
        assert!(e.contains("jwks_file"), "{e}");
    }
    let e = config_with(
        r#"
[[idp]]
issuer = "https://idp.example"
jwks_uri = "http://idp.example/jwks"
"#,
        false,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("https://idp.example") && e.contains("https only"),
        "{e}"
    );

    assert!(config_with(&workload(r#"jwks_uri = "https://ci.example/jwks""#), false).is_ok());
    assert!(config_with(&workload(r#"jwks_uri = "http://127.0.0.1:9/jwks""#), true).is_ok());
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    write!(keys, "{}", json!({ "keys": [client_key("k").jwk] })).unwrap();
    let local = format!(
        r#"
[[idp]]
issuer = "http://localhost:9000"
jwks_file = {:?}
"#,
        keys.path().display().to_string()
    );
    assert!(config_with(&local, false).is_ok());

    let e = config_with(
        &format!(
            "{}{}",
            workload(r#"jwks_uri = "https://ci.example/jwks""#),
            workload(r#"jwks_uri = "https://ci.example/other""#)
        ),
        false,
    )
    .err()
    .unwrap();
    assert!(
        e.contains("https://ci.example") && e.contains("twice"),
        "{e}"
    );
}
