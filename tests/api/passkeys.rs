//! Passkeys (issue 17 item 1) through the real router, with a software
//! authenticator (P-256, aws-lc-rs) standing in for the browser: register
//! from the account page, sign in by passkey (plain and into the code
//! flow), and the ways a ceremony must fail: a replayed ceremony, another
//! origin, a counter going backwards, a stranger's passkey, removing the
//! last way in.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use serde_json::json;

use crate::both;
use crate::code_flow::{Browser, PASSWORD, hidden, location, user};
use crate::helpers::{ISSUER, TestApp};

const RP_ID: &str = "auth.example.com";

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).unwrap();
    out
}

/// A platform authenticator holding one discoverable P-256 credential.
pub struct Authenticator {
    key: EcdsaKeyPair,
    credential_id: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
}

impl Authenticator {
    pub fn new() -> Self {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        Self {
            key: EcdsaKeyPair::from_pkcs8(
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                pkcs8.as_ref(),
            )
            .unwrap(),
            credential_id: aws_lc_rs::rand::generate::<[u8; 16]>(&SystemRandom::new())
                .unwrap()
                .expose()
                .to_vec(),
            user_handle: Vec::new(),
            counter: 0,
        }
    }

    fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({ "type": kind, "challenge": challenge, "origin": origin }))
            .unwrap()
    }

    /// `navigator.credentials.create()`: the form fields the script posts.
    fn create(&mut self, options: &serde_json::Value) -> Vec<(String, String)> {
        let o = &options["publicKey"];
        assert_eq!(o["rp"]["id"], RP_ID);
        assert_eq!(o["authenticatorSelection"]["userVerification"], "required");
        self.user_handle = URL_SAFE_NO_PAD
            .decode(o["user"]["id"].as_str().unwrap())
            .unwrap();
        let point = self.key.public_key().as_ref();
        let int = |i: i64| Value::Integer(i.into());
        let cose = cbor(&Value::Map(vec![
            (int(1), int(2)),
            (int(3), int(-7)),
            (int(-1), int(1)),
            (int(-2), Value::Bytes(point[1..33].to_vec())),
            (int(-3), Value::Bytes(point[33..65].to_vec())),
        ]));
        let mut auth_data = sha256(RP_ID.as_bytes());
        auth_data.push(0x01 | 0x04 | 0x08 | 0x40); // UP, UV, BE, AT
        auth_data.extend_from_slice(&self.counter.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]);
        auth_data.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&cose);
        let attestation = cbor(&Value::Map(vec![
            (Value::Text("fmt".into()), Value::Text("none".into())),
            (Value::Text("attStmt".into()), Value::Map(vec![])),
            (Value::Text("authData".into()), Value::Bytes(auth_data)),
        ]));
        let cd = Self::client_data("webauthn.create", o["challenge"].as_str().unwrap(), ISSUER);
        vec![
            ("client_data_json".into(), URL_SAFE_NO_PAD.encode(cd)),
            (
                "attestation_object".into(),
                URL_SAFE_NO_PAD.encode(attestation),
            ),
        ]
    }

    /// `navigator.credentials.get()`, from `origin`.
    pub fn get(&mut self, options: &serde_json::Value, origin: &str) -> Vec<(String, String)> {
        let o = &options["publicKey"];
        assert_eq!(o["rpId"], RP_ID);
        self.counter += 1;
        let mut auth_data = sha256(RP_ID.as_bytes());
        auth_data.push(0x01 | 0x04 | 0x08);
        auth_data.extend_from_slice(&self.counter.to_be_bytes());
        let cd = Self::client_data("webauthn.get", o["challenge"].as_str().unwrap(), origin);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(&cd));
        let sig = self.key.sign(&SystemRandom::new(), &signed).unwrap();
        vec![
            (
                "credential_id".into(),
                URL_SAFE_NO_PAD.encode(&self.credential_id),
            ),
            ("client_data_json".into(), URL_SAFE_NO_PAD.encode(cd)),
            (
                "authenticator_data".into(),
                URL_SAFE_NO_PAD.encode(auth_data),
            ),
            ("signature".into(), URL_SAFE_NO_PAD.encode(sig.as_ref())),
            (
                "user_handle".into(),
                URL_SAFE_NO_PAD.encode(&self.user_handle),
            ),
        ]
    }
}

pub fn with<'a>(
    fields: &'a [(String, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(extra.iter().copied())
        .collect()
}

/// Registers a passkey for the signed-in browser from the passkeys page.
pub async fn register(browser: &Browser<'_>, authenticator: &mut Authenticator, name: &str) {
    let page = browser.get("/account/passkeys").await;
    assert_eq!(page.status, 200);
    let csrf = hidden_attr(&page, "data-csrf");
    let options = browser
        .post("/passkeys/register/options", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(
        options.status,
        200,
        "{}",
        String::from_utf8_lossy(&options.body)
    );
    let fields = authenticator.create(&options.json());
    let r = browser
        .post(
            "/passkeys/register",
            &with(&fields, &[("csrf_token", &csrf), ("name", name)]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["redirect"], "/account/passkeys");
}

/// An attribute's value in a page (`data-csrf="…"`).
pub fn hidden_attr(page: &crate::helpers::TestResponse, name: &str) -> String {
    let html = String::from_utf8_lossy(&page.body);
    let marker = format!("{name}=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].to_string()
}

/// Starts a passkey sign-in from the login page: (csrf, options).
async fn login_options(browser: &Browser<'_>, return_to: &str) -> (String, serde_json::Value) {
    let page = browser
        .get(&format!(
            "/login?return_to={}",
            form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
        ))
        .await;
    let csrf = hidden(&page, "csrf_token");
    let options = browser
        .post("/passkeys/login/options", &[("csrf_token", &csrf)])
        .await;
    assert_eq!(options.status, 200);
    (csrf, options.json())
}

async fn passkeys_register_sign_in_and_refuse(app: TestApp) {
    user(&app, "alice").await;
    let alice = Browser::new(&app);
    alice.login("alice", PASSWORD).await;

    // The page loads the one script by nonce and integrity; CSP allows
    // nothing else.
    let page = alice.get("/account/passkeys").await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let csp = page.header("content-security-policy").unwrap().to_string();
    let nonce = hidden_attr(&page, "nonce");
    assert!(
        csp.contains(&format!("script-src 'nonce-{nonce}'")),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-eval"));
    assert!(hidden_attr(&page, "integrity").starts_with("sha256-"));
    let js = alice.get("/static/passkeys.js").await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );

    // Ceremonies want the page's CSRF token and a session.
    assert_eq!(
        alice
            .post("/passkeys/register/options", &[("csrf_token", "forged")])
            .await
            .status,
        403
    );
    let anonymous = Browser::new(&app);
    let csrf = hidden(&anonymous.get("/login").await, "csrf_token");
    assert_eq!(
        anonymous
            .post("/passkeys/register/options", &[("csrf_token", &csrf)])
            .await
            .status,
        401
    );

    let mut key = Authenticator::new();
    register(&alice, &mut key, "Laptop").await;
    let listed = alice.get("/account/passkeys").await;
    let html = String::from_utf8_lossy(&listed.body).to_string();
    assert!(html.contains("Laptop") && html.contains("ES256"), "{html}");

    // A registration replayed: its ceremony was used.
    let csrf = hidden_attr(&listed, "data-csrf");
    let options = alice
        .post("/passkeys/register/options", &[("csrf_token", &csrf)])
        .await
        .json();
    let fields = key.create(&options);
    alice
        .post(
            "/passkeys/register",
            &with(&fields, &[("csrf_token", &csrf)]),
        )
        .await
        .assert_error(400, "invalid_request"); // the same credential id again
    alice
        .post(
            "/passkeys/register",
            &with(&fields, &[("csrf_token", &csrf)]),
        )
        .await
        .assert_error(400, "invalid_request"); // and the ceremony is spent

    // Sign in with it, no password, into the code flow's return page.
    let browser = Browser::new(&app);
    let return_to = "/authorize?client_id=x&response_type=code";
    let (csrf, options) = login_options(&browser, return_to).await;
    let fields = key.get(&options, ISSUER);
    let r = browser
        .post(
            "/passkeys/login",
            &with(&fields, &[("csrf_token", &csrf), ("return_to", return_to)]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["redirect"], return_to);
    let account = browser.get("/account").await;
    assert!(String::from_utf8_lossy(&account.body).contains("Signed in as alice"));
    app.audit_events_with(&["passkey.registered", "user.login"])
        .await;

    // The same answer again (with the new session's CSRF token): the
    // ceremony is spent.
    let csrf = hidden(&browser.get("/login").await, "csrf_token");
    browser
        .post("/passkeys/login", &with(&fields, &[("csrf_token", &csrf)]))
        .await
        .assert_error(400, "invalid_request");

    // Another origin (a phishing page relaying the ceremony): refused.
    let phished = Browser::new(&app);
    let (csrf, options) = login_options(&phished, "/account").await;
    let fields = key.get(&options, "https://auth.example.com.evil.test");
    phished
        .post("/passkeys/login", &with(&fields, &[("csrf_token", &csrf)]))
        .await
        .assert_error(401, "access_denied");

    // A counter that went backwards: a cloned authenticator.
    let cloned = Browser::new(&app);
    let (csrf, options) = login_options(&cloned, "/account").await;
    key.counter = 0;
    let fields = key.get(&options, ISSUER);
    let r = cloned
        .post("/passkeys/login", &with(&fields, &[("csrf_token", &csrf)]))
        .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("cloned")
    );
    key.counter = 10;

    // A stranger: alice's passkey is not theirs to see or remove.
    user(&app, "bob").await;
    let bob = Browser::new(&app);
    bob.login("bob", PASSWORD).await;
    let passkey_id = store_id(&app, "alice").await;
    assert_eq!(
        bob.get(&format!("/account/passkeys/{passkey_id}/confirm"))
            .await
            .status,
        403
    );
    let bob_csrf = hidden(&bob.get("/account").await, "csrf_token");
    assert_eq!(
        bob.post(
            &format!("/account/passkeys/{passkey_id}/delete"),
            &[("csrf_token", &bob_csrf)]
        )
        .await
        .status,
        403
    );

    // Alice drops her password: the password no longer signs her in, and
    // her last passkey cannot go.
    let confirm = alice.get("/account/password/confirm").await;
    let csrf = hidden(&confirm, "csrf_token");
    assert_eq!(
        location(
            &alice
                .post("/account/password/remove", &[("csrf_token", &csrf)])
                .await
        ),
        "/account/passkeys"
    );
    let r = Browser::new(&app).login("alice", PASSWORD).await;
    assert_eq!(r.status, 401);
    let confirm = alice
        .get(&format!("/account/passkeys/{passkey_id}/confirm"))
        .await;
    let csrf = hidden(&confirm, "csrf_token");
    let remove = format!("/account/passkeys/{passkey_id}/delete");
    let r = alice.post(&remove, &[("csrf_token", &csrf)]).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("last passkey"));

    // With a second passkey, the first may go; it signs in no more.
    let mut phone = Authenticator::new();
    register(&alice, &mut phone, "Phone").await;
    assert_eq!(
        location(&alice.post(&remove, &[("csrf_token", &csrf)]).await),
        "/account/passkeys"
    );
    let gone = Browser::new(&app);
    let (csrf, options) = login_options(&gone, "/account").await;
    let fields = key.get(&options, ISSUER);
    gone.post("/passkeys/login", &with(&fields, &[("csrf_token", &csrf)]))
        .await
        .assert_error(401, "access_denied");
    let (csrf, options) = login_options(&gone, "/account").await;
    let fields = phone.get(&options, ISSUER);
    assert_eq!(
        gone.post("/passkeys/login", &with(&fields, &[("csrf_token", &csrf)]))
            .await
            .status,
        200
    );
}
both!(passkeys_register_sign_in_and_refuse);

async fn store_id(app: &TestApp, username: &str) -> String {
    let u = agentauth::store::users::by_username(&app.state.db, username)
        .await
        .unwrap()
        .unwrap();
    agentauth::store::passkeys::for_user(&app.state.db, &u.id)
        .await
        .unwrap()
        .remove(0)
        .id
}
