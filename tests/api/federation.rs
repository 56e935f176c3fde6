//! Workload federation and enterprise-managed authorization (issue 13
//! item 5): RFC 7523 §2.1 JWT bearer grants from issuers the operator
//! trusts, against a local stand-in issuer that serves its own JWKS.

use std::io::Write as _;

use serde_json::{Value, json};

use crate::dpop::ProofKey;
use crate::helpers::{
    Backend, ISSUER, TestApp, TestResponse, fresh_db, jwt_parts, serve_args, spawn_app_on,
};
use crate::private_key_jwt::{ClientKey, client_key};

pub(crate) const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const MCP: &str = "https://mcp.example.com/mcp";

pub(crate) struct Federated {
    pub(crate) app: TestApp,
    pub(crate) agent_id: String,
    pub(crate) ci: ClientKey,
    pub(crate) idp: ClientKey,
}

/// A node trusting a CI issuer (one rule, mapping to an agent) and an IdP,
/// both serving their keys at a local document server (`--insecure-fetch-for-tests-only`
/// lets `jwks_uri` be plain http, for tests only).
pub(crate) async fn federated(backend: Backend) -> Federated {
    let ci = client_key("ci-key");
    let idp = client_key("idp-key");
    let base = crate::code_flow::document_server(vec![
        ("/ci/jwks", json!({ "keys": [ci.jwk] }), "max-age=60"),
        ("/idp/jwks", json!({ "keys": [idp.jwk] }), "max-age=60"),
    ])
    .await;
    let (db, dir) = fresh_db(backend).await;
    let now = 1_800_000_000;
    let alice = agentauth::accounts::create_user(
        &db,
        "alice@example.com",
        crate::code_flow::PASSWORD.into(),
        now,
    )
    .await
    .unwrap();
    let key = client_key("agent-key");
    let (agent, _) = agentauth::agents::create(
        &db,
        &agentauth::grants::Registry::standard(),
        agentauth::agents::NewAgent {
            name: "deployer".into(),
            owner_id: alice.id,
            scope: agentauth::oauth::scope::Scope::parse("deploy").unwrap(),
            resources: Vec::new(),
            keys: jsonwebtoken::jwk::JwkSet {
                keys: vec![agentauth::agents::check_key(&key.jwk).unwrap()],
            },
        },
        now,
        "test",
    )
    .await
    .unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        r#"
[[workload]]
issuer = "https://ci.example"
jwks_uri = "{base}/ci/jwks"
algorithms = ["ES256"]

[[workload.rule]]
agent = "{agent}"
claims = {{ repository = "acme/app", ref = "refs/heads/main" }}

[[idp]]
issuer = "https://idp.example"
jwks_uri = "{base}/idp/jwks"
"#,
        agent = agent.id
    )
    .unwrap();
    let mut args = serve_args();
    args.insecure_fetch = true;
    args.federation_file = Some(file.path().to_path_buf());
    let app = spawn_app_on(backend, db, dir, args).await;
    Federated {
        app,
        agent_id: agent.id,
        ci,
        idp,
    }
}

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

pub(crate) fn ci_claims(app: &TestApp, extra: Value) -> Value {
    let mut c = json!({
        "iss": "https://ci.example", "aud": ISSUER, "sub": "repo:acme/app:ref:refs/heads/main",
        "repository": "acme/app", "ref": "refs/heads/main",
        "jti": agentauth::crypto::random_id().unwrap(), "iat": app.now(), "exp": app.now() + 300,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

pub(crate) async fn bearer(app: &TestApp, assertion: &str, extra: &[(&str, &str)]) -> TestResponse {
    let mut pairs = vec![("grant_type", GRANT), ("assertion", assertion)];
    pairs.extend_from_slice(extra);
    app.post_form("/token", &pairs, None).await
}

/// A CI job's token mapped to an agent: an access token for the agent
/// with no stored secret, once; a passport bound to the job's DPoP key.
async fn workload_tokens_become_agent_tokens(f: Federated) {
    let app = &f.app;
    let assertion = f.ci.assertion(ci_claims(app, json!({})));
    let r = bearer(app, &assertion, &[("resource", MCP)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, claims) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], f.agent_id);
    assert_eq!(claims["agent_id"], f.agent_id);
    assert_eq!(claims["scope"], "deploy");
    bearer(app, &assertion, &[("resource", MCP)])
        .await
        .assert_error(400, "invalid_grant");

    let job_key = ProofKey::new();
    let passport = "urn:agentauth:params:token-type:passport";
    let assertion = f.ci.assertion(ci_claims(app, json!({})));
    let r = app
        .post_form_with_dpop(
            "/token",
            &[
                ("grant_type", GRANT),
                ("assertion", &assertion),
                ("requested_token_type", passport),
            ],
            &job_key.proof(app),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["issued_token_type"], passport);
    let (_, claims) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["cnf"]["jkt"], job_key.thumbprint());
    let assertion = f.ci.assertion(ci_claims(app, json!({})));
    bearer(app, &assertion, &[("requested_token_type", passport)])
        .await
        .assert_error(400, "invalid_request");
}
federated!(workload_tokens_become_agent_tokens);

/// Every way an external token is refused: untrusted issuer, wrong
/// audience, unmapped subject, expired, signed by a stranger, no jti, and
/// a disabled agent.
async fn untrusted_or_unmapped_workloads_are_refused(f: Federated) {
    let app = &f.app;
    let cases = [
        (
            "untrusted issuer",
            f.ci.assertion(ci_claims(app, json!({"iss": "https://evil.example"}))),
        ),
        (
            "wrong audience",
            f.ci.assertion(ci_claims(app, json!({"aud": "https://elsewhere.example"}))),
        ),
        (
            "unmapped subject",
            f.ci.assertion(ci_claims(app, json!({"ref": "refs/heads/dev"}))),
        ),
        (
            "expired",
            f.ci.assertion(ci_claims(
                app,
                json!({"iat": app.now() - 900, "exp": app.now() - 600}),
            )),
        ),
        (
            "too long-lived",
            f.ci.assertion(ci_claims(app, json!({"exp": app.now() + 7200}))),
        ),
        (
            "a stranger's key",
            client_key("ci-key").assertion(ci_claims(app, json!({}))),
        ),
        ("no jti", f.ci.assertion(ci_claims(app, json!({"jti": ""})))),
    ];
    app.post_form("/token", &[("grant_type", GRANT)], None)
        .await
        .assert_error(400, "invalid_request");
    for (why, assertion) in cases {
        let body = bearer(app, &assertion, &[])
            .await
            .assert_error(400, "invalid_grant");
        assert!(body["error_description"].is_string(), "{why}: {body}");
    }
    crate::agents::set_agent_active(app, &f.agent_id, false).await;
    app.state.forget_agent(&f.agent_id).await;
    let r = bearer(app, &f.ci.assertion(ci_claims(app, json!({}))), &[]).await;
    assert!(r.status == 400 || r.status == 401, "{}", r.status);
}
federated!(untrusted_or_unmapped_workloads_are_refused);

/// A client registered for the JWT bearer grant.
async fn enterprise_client(app: &TestApp) -> (String, String) {
    let reg = app
        .register(
            json!({"client_name": "enterprise app", "grant_types": [GRANT],
                         "token_endpoint_auth_method": "client_secret_basic", "scope": "read"}),
        )
        .await;
    (
        reg["client_id"].as_str().unwrap().to_string(),
        reg["client_secret"].as_str().unwrap().to_string(),
    )
}

/// The MCP enterprise-managed profile: an Identity Assertion JWT for a
/// user, issued to a registered client, gets that client a token for the
/// user; presented by another client, or for an unknown user, refused.
async fn identity_assertions_for_users(f: Federated) {
    let app = &f.app;
    let (id, secret) = enterprise_client(app).await;
    let jag = |client_id: &str, email: &str| {
        f.idp.sign_typed(
            "oauth-id-jag+jwt",
            json!({"iss": "https://idp.example", "aud": ISSUER, "sub": "u-123", "email": email,
                   "client_id": client_id, "scope": "read", "resource": MCP,
                   "jti": agentauth::crypto::random_id().unwrap(), "iat": app.now(), "exp": app.now() + 300}),
        )
    };
    let assertion = jag(&id, "alice@example.com");
    let r = app
        .post_form(
            "/token",
            &[("grant_type", GRANT), ("assertion", &assertion)],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, claims) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    let alice = agentauth::store::users::by_username(&app.state.db, "alice@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claims["sub"], alice.id);
    assert_eq!(claims["client_id"], id);
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["scope"], "read");

    let (other, other_secret) = enterprise_client(app).await;
    app.post_form(
        "/token",
        &[
            ("grant_type", GRANT),
            ("assertion", &jag(&id, "alice@example.com")),
        ],
        Some((&other, &other_secret)),
    )
    .await
    .assert_error(400, "invalid_grant");
    app.post_form(
        "/token",
        &[
            ("grant_type", GRANT),
            ("assertion", &jag(&id, "bob@example.com")),
        ],
        Some((&id, &secret)),
    )
    .await
    .assert_error(400, "invalid_grant");
    // Without client authentication an identity assertion is no credential.
    app.post_form(
        "/token",
        &[
            ("grant_type", GRANT),
            ("assertion", &jag(&id, "alice@example.com")),
        ],
        None,
    )
    .await
    .assert_error(401, "invalid_client");
}
federated!(identity_assertions_for_users);

/// Issue 16: a CI job with no stored secret gets a bridge certificate for
/// its agent (its workload token authenticates it, once); an expired
/// workload token, or one replayed, gets none.
async fn workloads_get_bridge_certificates(f: Federated) {
    use crate::bridge::{BRIDGE, EdKey, chain, nonce};
    let app = &f.app;
    let key = EdKey::new();
    let request = |assertion: String, csr: Vec<u8>| async move {
        let csr = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, csr);
        app.post_form(
            "/token",
            &[
                ("grant_type", BRIDGE),
                ("assertion", &assertion),
                ("csr", &csr),
            ],
            None,
        )
        .await
    };
    let assertion = f.ci.assertion(ci_claims(app, json!({})));
    // A request refused for its scope does not spend the assertion.
    let csr = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        key.csr(Some(&nonce(app).await)),
    );
    app.post_form(
        "/token",
        &[
            ("grant_type", BRIDGE),
            ("assertion", &assertion),
            ("csr", &csr),
            ("scope", "admin"),
        ],
        None,
    )
    .await
    .assert_error(400, "invalid_scope");
    let r = request(assertion.clone(), key.csr(Some(&nonce(app).await))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let ders = chain(r.json()["access_token"].as_str().unwrap());
    let (_, leaf) = x509_parser::parse_x509_certificate(&ders[0]).unwrap();
    assert_eq!(
        leaf.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        f.agent_id
    );
    // Replayed.
    request(assertion, key.csr(Some(&nonce(app).await)))
        .await
        .assert_error(400, "invalid_grant");
    // Expired.
    let expired = f.ci.assertion(ci_claims(
        app,
        json!({ "iat": app.now() - 600, "exp": app.now() - 60 }),
    ));
    let r = request(expired, key.csr(Some(&nonce(app).await))).await;
    let e = r.assert_error(400, "invalid_grant");
    assert!(
        e["error_description"].as_str().unwrap().contains("expired"),
        "{e}"
    );
}
federated!(workloads_get_bridge_certificates);

/// Issue 30 item 6 (MCP workload federation, SEP-1933): an assertion
/// whose `aud` is our token endpoint, sent with `resource` and neither
/// `client_id` nor client authentication, gets a token for the resource.
/// An `aud` naming anything else is `invalid_grant`.
async fn workload_assertions_may_name_the_token_endpoint(f: Federated) {
    let app = &f.app;
    let assertion =
        f.ci.assertion(ci_claims(app, json!({ "aud": format!("{ISSUER}/token") })));
    let r = bearer(app, &assertion, &[("resource", MCP)]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (_, claims) = jwt_parts(r.json()["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], MCP);
    assert_eq!(claims["sub"], f.agent_id);

    let elsewhere = f.ci.assertion(ci_claims(
        app,
        json!({ "aud": format!("{ISSUER}/introspect") }),
    ));
    bearer(app, &elsewhere, &[("resource", MCP)])
        .await
        .assert_error(400, "invalid_grant");
}
federated!(workload_assertions_may_name_the_token_endpoint);

/// Issue 30 item 5: with an IdP in the federation file, metadata
/// advertises the ID-JAG grant profile; without one it does not.
async fn metadata_advertises_the_id_jag_profile(f: Federated) {
    let meta = f
        .app
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert_eq!(
        meta["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    let plain = crate::helpers::spawn_app(f.app.backend).await;
    let meta = plain
        .get("/.well-known/oauth-authorization-server")
        .await
        .json();
    assert!(meta.get("authorization_grant_profiles_supported").is_none());
}
federated!(metadata_advertises_the_id_jag_profile);
