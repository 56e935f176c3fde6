//! Bridge certificates (issue 16) through the real router, on SQLite and
//! PostgreSQL: the CSR and DPoP proofs of possession, what the certificate
//! says, every refusal SECURITY.md, "Bridge certificates" lists, tokens bound to the
//! certified key, and CA epochs. Real processes, `openssl verify` and a
//! rustls server are in `processes.rs`.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::agents::{Agent, agent, set_agent_active};
use crate::both;
use crate::dpop::ProofKey;
use crate::helpers::{ISSUER, TestApp, TestResponse};

pub const BRIDGE: &str = "urn:agentauth:params:grant-type:bridge-cert";
const CHAIN_TYPE: &str = "urn:agentauth:params:token-type:x509-chain-pem";
const TOKEN_URL: &str = "https://auth.example.com/token";
const MCP: &str = "https://mcp.example.com/mcp";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An Ed25519 key an agent wants certified: CSRs and DPoP proofs.
pub struct EdKey {
    pub pair: rcgen::KeyPair,
    encoding: EncodingKey,
}

impl EdKey {
    pub fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let encoding = EncodingKey::from_ed_der(&pair.serialize_der());
        Self { pair, encoding }
    }

    pub fn x(&self) -> String {
        b64(self.pair.public_key_raw())
    }

    pub fn jkt(&self) -> String {
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, self.x());
        b64(&agentauth::crypto::sha256(canonical.as_bytes()))
    }

    /// A PKCS#10 request, its challengePassword `nonce` when given (DER).
    pub fn csr(&self, nonce: Option<&str>) -> Vec<u8> {
        csr_with(&self.pair, nonce)
    }

    /// A DPoP proof for POST /token, with `nonce` when given.
    pub fn proof(&self, htu: &str, now: i64, nonce: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(
            serde_json::from_value(json!({ "kty": "OKP", "crv": "Ed25519", "x": self.x() }))
                .unwrap(),
        );
        let mut claims = json!({ "jti": agentauth::crypto::random_id().unwrap(),
                                 "htm": "POST", "htu": htu, "iat": now });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

pub fn csr_with(pair: &rcgen::KeyPair, nonce: Option<&str>) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let attrs = nonce
        .map(|n| vec![agentauth::agents::bridge::csr::challenge_password(n).unwrap()])
        .unwrap_or_default();
    params
        .serialize_request_with_attributes(pair, attrs)
        .unwrap()
        .der()
        .to_vec()
}

pub async fn nonce(app: &TestApp) -> String {
    let r = app.post_form("/bridge-certs/nonce", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["c_nonce_expires_in"], 120);
    assert_eq!(r.header("dpop-nonce"), body["c_nonce"].as_str());
    body["c_nonce"].as_str().unwrap().to_string()
}

pub async fn by_csr(app: &TestApp, a: &Agent, csr: &[u8], extra: &[(&str, &str)]) -> TestResponse {
    let csr = b64(csr);
    let mut pairs = vec![("grant_type", BRIDGE), ("csr", csr.as_str())];
    pairs.extend_from_slice(extra);
    a.token(app, &pairs, None).await
}

/// The DER certificates of a PEM chain (the resource kit's reader).
pub fn chain(pem: &str) -> Vec<Vec<u8>> {
    agentauth_resource::bridge::pem_certificates(pem)
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

fn ok(r: TestResponse) -> Value {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// The CSR path end to end: a chain of leaf and epoch CA, the leaf
/// certifying the CSR's key for 5 minutes (plus 30 s of skew before),
/// naming the agent, its owner and scopes, clientAuth only, signed by the
/// CA in the bundle; the nonce is then spent.
async fn a_csr_gets_a_certificate(app: TestApp) {
    let a = agent(&app, "alice", "read write", &[]).await;
    let key = EdKey::new();
    let n = nonce(&app).await;
    let csr = key.csr(Some(&n));
    let body = ok(by_csr(&app, &a, &csr, &[("scope", "read")]).await);
    assert_eq!(body["issued_token_type"], CHAIN_TYPE);
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(body["expires_in"], 300);
    assert_eq!(body["scope"], "read");
    let ders = chain(body["access_token"].as_str().unwrap());
    assert_eq!(ders.len(), 2, "leaf and CA");
    let (_, leaf) = X509Certificate::from_der(&ders[0]).unwrap();
    let (_, ca) = X509Certificate::from_der(&ders[1]).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.pair.public_key_raw()
    );
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    assert_eq!(leaf.issuer(), ca.subject());
    assert!(ca.is_ca());
    assert!(!leaf.is_ca());
    let validity = leaf.validity();
    assert_eq!(validity.not_before.timestamp(), app.now() - 30);
    assert_eq!(validity.not_after.timestamp(), app.now() + 300);
    assert_eq!(
        uris(&leaf),
        [
            format!("{ISSUER}/agents/{}", a.id),
            format!(
                "urn:agentauth:owner:{}",
                agentauth::store::users::by_username(&app.state.db, "alice")
                    .await
                    .unwrap()
                    .unwrap()
                    .id
            ),
            "urn:agentauth:scope:read".to_string(),
        ]
    );
    let cn = leaf.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), a.id);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.code_signing && !eku.server_auth);
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());

    // The CA is the one the bundle serves.
    let bundle = app.get("/.well-known/ca-bundle.pem").await;
    assert_eq!(bundle.status, 200);
    assert_eq!(
        bundle.header("content-type"),
        Some("application/pem-certificate-chain")
    );
    assert_eq!(
        chain(std::str::from_utf8(&bundle.body).unwrap()),
        [ders[1].clone()]
    );

    // The nonce is spent, and the CSR with it is useless now.
    let again = by_csr(&app, &a, &csr, &[]).await;
    let e = again.assert_error(400, "invalid_request");
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("already used")
    );

    // codeSigning when asked; other usages refused.
    let body = ok(by_csr(
        &app,
        &a,
        &key.csr(Some(&nonce(&app).await)),
        &[("certificate_usage", "clientAuth codeSigning")],
    )
    .await);
    let ders = chain(body["access_token"].as_str().unwrap());
    let (_, leaf) = X509Certificate::from_der(&ders[0]).unwrap();
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.code_signing);
    // Refused usages and scopes; such a refusal does not spend the nonce,
    // so the same CSR then succeeds.
    let csr = key.csr(Some(&nonce(&app).await));
    for usage in ["serverAuth", "clientAuth  codeSigning"] {
        by_csr(&app, &a, &csr, &[("certificate_usage", usage)])
            .await
            .assert_error(400, "invalid_request");
    }
    by_csr(&app, &a, &csr, &[("scope", "admin")])
        .await
        .assert_error(400, "invalid_scope");
    ok(by_csr(&app, &a, &csr, &[]).await);

    let events = app.audit_events_with(&["bridge_cert.issued"]).await;
    assert_eq!(
        events.iter().filter(|e| *e == "bridge_cert.issued").count(),
        3
    );
}
both!(a_csr_gets_a_certificate);

/// Every bad proof of possession is a 400 with a reason, never a 500:
/// another key's signature, a non-Ed25519 key, malformed DER, no nonce,
/// a forged or expired nonce, no proof at all; a disabled agent and a
/// client that is not an agent are refused.
async fn bad_proofs_are_refused(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let key = EdKey::new();
    let refused = |r: TestResponse, needle: &str| {
        let e = r.assert_error(400, "invalid_request");
        let why = e["error_description"].as_str().unwrap().to_string();
        assert!(why.contains(needle), "{why:?} lacks {needle:?}");
    };

    // The CSR names one key and is signed by another: put key B's public
    // key in A's request, under A's signature.
    let other = EdKey::new();
    let mut swapped = key.csr(Some(&nonce(&app).await));
    let at = swapped
        .windows(32)
        .position(|w| w == key.pair.public_key_raw())
        .unwrap();
    swapped[at..at + 32].copy_from_slice(other.pair.public_key_raw());
    refused(by_csr(&app, &a, &swapped, &[]).await, "signature");

    // A P-256 key.
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = csr_with(&p256, Some(&nonce(&app).await));
    refused(by_csr(&app, &a, &csr, &[]).await, "Ed25519");

    // Malformed: garbage, truncated, not base64, huge.
    refused(by_csr(&app, &a, b"\x30\x03\x02\x01", &[]).await, "PKCS#10");
    let good = key.csr(Some(&nonce(&app).await));
    refused(
        by_csr(&app, &a, &good[..good.len() - 9], &[]).await,
        "PKCS#10",
    );
    refused(
        a.token(
            &app,
            &[("grant_type", BRIDGE), ("csr", "%%% not base64")],
            None,
        )
        .await,
        "base64",
    );
    let huge = "A".repeat(12_000);
    refused(
        a.token(&app, &[("grant_type", BRIDGE), ("csr", &huge)], None)
            .await,
        "too large",
    );

    // No nonce; a nonce of another server; an expired one.
    refused(
        by_csr(&app, &a, &key.csr(None), &[]).await,
        "no server nonce",
    );
    let forged = b64(&[0u8; 40]);
    refused(
        by_csr(&app, &a, &key.csr(Some(&forged)), &[]).await,
        "unknown or expired",
    );
    let stale = nonce(&app).await;
    app.clock.advance(121);
    refused(
        by_csr(&app, &a, &key.csr(Some(&stale)), &[]).await,
        "unknown or expired",
    );

    // No proof of possession at all.
    refused(
        a.token(&app, &[("grant_type", BRIDGE)], None).await,
        "prove possession",
    );

    // A disabled agent: invalid_client, before anything else.
    let n = nonce(&app).await;
    set_agent_active(&app, &a.id, false).await;
    app.state.agents.forget(&a.id).await;
    by_csr(&app, &a, &key.csr(Some(&n)), &[])
        .await
        .assert_error(401, "invalid_client");

    // A confidential client that is not an agent may not register the
    // grant, and is refused it.
    let (id, secret) = app.cc_client("read").await;
    let csr = b64(&key.csr(Some(&nonce(&app).await)));
    app.post_form(
        "/token",
        &[("grant_type", BRIDGE), ("csr", &csr)],
        Some((&id, &secret)),
    )
    .await
    .assert_error(400, "unauthorized_client");
}
both!(bad_proofs_are_refused);

/// The DPoP path: a proof without a server nonce gets `use_dpop_nonce`
/// and a fresh one; with it, the proof's own key is certified; the nonce
/// is single use; a P-256 proof key, or a CSR naming another key, is
/// refused.
async fn a_dpop_proof_gets_a_certificate(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let key = EdKey::new();
    let first = a
        .token(
            &app,
            &[("grant_type", BRIDGE)],
            Some(&key.proof(TOKEN_URL, app.now(), None)),
        )
        .await;
    first.assert_error(400, "use_dpop_nonce");
    let n = first.header("dpop-nonce").unwrap().to_string();
    let body = ok(a
        .token(
            &app,
            &[("grant_type", BRIDGE)],
            Some(&key.proof(TOKEN_URL, app.now(), Some(&n))),
        )
        .await);
    let ders = chain(body["access_token"].as_str().unwrap());
    let (_, leaf) = X509Certificate::from_der(&ders[0]).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.pair.public_key_raw()
    );
    // The same nonce in a new proof: spent.
    let reused = a
        .token(
            &app,
            &[("grant_type", BRIDGE)],
            Some(&key.proof(TOKEN_URL, app.now(), Some(&n))),
        )
        .await;
    reused.assert_error(400, "use_dpop_nonce");
    assert_ne!(reused.header("dpop-nonce"), Some(n.as_str()));

    // A P-256 proof key cannot be certified.
    let p256 = ProofKey::new();
    let mut claims = p256.claims("POST", TOKEN_URL, app.now());
    claims["nonce"] = json!(nonce(&app).await);
    let r = a
        .token(
            &app,
            &[("grant_type", BRIDGE)],
            Some(&p256.sign(&p256.header(), &claims)),
        )
        .await;
    let e = r.assert_error(400, "invalid_request");
    assert!(e["error_description"].as_str().unwrap().contains("Ed25519"));

    // A CSR for one key with a DPoP proof of another.
    let other = EdKey::new();
    let csr = b64(&other.csr(Some(&nonce(&app).await)));
    let r = a
        .token(
            &app,
            &[("grant_type", BRIDGE), ("csr", &csr)],
            Some(&key.proof(TOKEN_URL, app.now(), None)),
        )
        .await;
    let e = r.assert_error(400, "invalid_request");
    assert!(
        e["error_description"]
            .as_str()
            .unwrap()
            .contains("different keys")
    );
}
both!(a_dpop_proof_gets_a_certificate);

/// One key, one certificate, one binding: tokens and passports asked for
/// with a DPoP proof of the certified key carry `cnf.x5t#S256` of the
/// certificate beside `jkt`, which the resource kit matches against the
/// certificate; the key need not be registered while its certificate
/// lives, and is refused once it has expired.
async fn tokens_bind_to_the_certified_key(app: TestApp) {
    let a = agent(&app, "alice", "read", &[]).await;
    let key = EdKey::new();
    // Before any certificate, an unregistered key is refused.
    a.token(
        &app,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some(&key.proof(TOKEN_URL, app.now(), None)),
    )
    .await
    .assert_error(400, "invalid_dpop_proof");

    let body = ok(by_csr(&app, &a, &key.csr(Some(&nonce(&app).await)), &[]).await);
    let leaf = chain(body["access_token"].as_str().unwrap()).remove(0);
    let x5t = b64(&agentauth::crypto::sha256(&leaf));

    let token = ok(a
        .token(
            &app,
            &[("grant_type", "client_credentials"), ("resource", MCP)],
            Some(&key.proof(TOKEN_URL, app.now(), None)),
        )
        .await);
    assert_eq!(token["token_type"], "DPoP");
    let claims: agentauth_resource::claims::AccessTokenClaims = serde_json::from_value(
        crate::helpers::jwt_parts(token["access_token"].as_str().unwrap()).1,
    )
    .unwrap();
    let cnf = claims.cnf.unwrap();
    assert_eq!(cnf.jkt, key.jkt());
    assert_eq!(cnf.x5t_s256.as_deref(), Some(x5t.as_str()));
    assert!(cnf.matches_certificate(&leaf));
    assert!(!cnf.matches_certificate(b"another certificate"));
    let introspected = app
        .introspect(token["access_token"].as_str().unwrap())
        .await;
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["cnf"]["x5t#S256"], x5t);

    // RFC 8705 §3 at a resource that terminates mutual TLS: the token
    // under the Bearer scheme with the certificate it is bound to, not
    // with another, nor with none.
    let verifier = agentauth_resource::ResourceVerifier::new(
        ISSUER,
        MCP,
        crate::resource::AsKeys(app.state.clone()),
    );
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", token["access_token"].as_str().unwrap())
            .parse()
            .unwrap(),
    );
    let over_mtls = |cert: Option<&[u8]>| {
        verifier.verify_request_with_certificate("GET", MCP, &headers, app.now(), cert)
    };
    assert_eq!(over_mtls(Some(&leaf)).unwrap().claims.sub, a.id);
    let stranger = rcgen::CertificateParams::default()
        .self_signed(&key.pair)
        .unwrap();
    assert!(over_mtls(Some(stranger.der())).is_err());
    assert!(over_mtls(None).is_err());

    let passport = ok(a
        .token(
            &app,
            &[("grant_type", "urn:agentauth:params:grant-type:passport")],
            Some(&key.proof(TOKEN_URL, app.now(), None)),
        )
        .await);
    let claims = crate::helpers::jwt_parts(passport["access_token"].as_str().unwrap()).1;
    assert_eq!(claims["cnf"], json!({ "jkt": key.jkt(), "x5t#S256": x5t }));

    // The certificate expires: its key is a stranger again.
    app.clock.advance(301);
    a.token(
        &app,
        &[("grant_type", "client_credentials"), ("resource", MCP)],
        Some(&key.proof(TOKEN_URL, app.now(), None)),
    )
    .await
    .assert_error(400, "invalid_dpop_proof");
}
both!(tokens_bind_to_the_certified_key);

async fn pems(app: &TestApp) -> Vec<Vec<u8>> {
    let r = app.get("/.well-known/ca-bundle.pem").await;
    chain(std::str::from_utf8(&r.body).unwrap())
}

/// Epochs: the next one starts when the current is over (the old CA
/// stays in the bundle), `ca rotate` starts one at once, and
/// `--drop-previous` leaves only the new CA; the authority document says
/// which is which.
async fn epochs_rotate_and_drop(app: TestApp) {
    let first = pems(&app).await;
    assert_eq!(first.len(), 1);
    let doc = app
        .get("/.well-known/agentauth-authority.json")
        .await
        .json();
    assert_eq!(doc["issuer"], ISSUER);
    assert_eq!(doc["grant_type"], BRIDGE);
    assert_eq!(
        doc["ca_bundle_uri"],
        format!("{ISSUER}/.well-known/ca-bundle.pem")
    );
    assert_eq!(
        doc["nonce_endpoint"],
        format!("{ISSUER}/bridge-certs/nonce")
    );
    assert_eq!(doc["certificate_lifetime"], 300);
    assert_eq!(doc["epochs"][0]["status"], "current");
    let first_epoch = doc["epochs"][0]["epoch"].as_i64().unwrap();

    // The epoch ends: the next starts on first use, the old one stays.
    app.clock.advance(86_400);
    let second = pems(&app).await;
    assert_eq!(second.len(), 2);
    assert_eq!(second[1], first[0]);
    let doc = app
        .get("/.well-known/agentauth-authority.json")
        .await
        .json();
    assert_eq!(doc["epochs"][0]["epoch"], first_epoch + 1);
    assert_eq!(doc["epochs"][1]["status"], "previous");

    // An operator's rotation with --drop-previous: only the new CA.
    let kek = agentauth::crypto::Kek::from_bytes(&app.kek_bytes).unwrap();
    let epoch = agentauth::agents::bridge::ca::rotate(
        &app.state.db,
        &agentauth::agents::bridge::ca::ca_kek(&kek).unwrap(),
        "auth.example.com",
        86_400,
        true,
        app.now(),
    )
    .await
    .unwrap();
    assert_eq!(epoch, first_epoch + 2);
    app.state
        .agents
        .bridge
        .reload(&app.state.db, app.now())
        .await
        .unwrap();
    let third = pems(&app).await;
    assert_eq!(third.len(), 1);
    assert!(!second.contains(&third[0]));
    // New certificates come from the new CA.
    let a = agent(&app, "alice", "read", &[]).await;
    let key = EdKey::new();
    let body = ok(by_csr(&app, &a, &key.csr(Some(&nonce(&app).await)), &[]).await);
    assert_eq!(chain(body["access_token"].as_str().unwrap())[1], third[0]);
    let events = app.audit_events_with(&["ca.rotated"]).await;
    assert_eq!(
        events.iter().filter(|e| *e == "ca.rotated").count(),
        3,
        "first epoch, scheduled rotation, operator rotation"
    );
    // A KEK that cannot open the CA keys may not start an epoch.
    let wrong = agentauth::crypto::Kek::from_bytes(&[9; 32]).unwrap();
    assert!(
        agentauth::agents::bridge::ca::rotate(&app.state.db, &wrong, "h", 86_400, false, app.now())
            .await
            .is_err()
    );
    // Were one started anyway (written past the check), this node could
    // open no CA: the bundle is a 503, never empty, and no certificate
    // issues (503 with Retry-After), rather than a 500.
    let row = agentauth::agents::bridge::ca::generate(
        &wrong,
        "auth.example.com",
        epoch + 1,
        app.now(),
        86_400,
    )
    .unwrap();
    let audit = agentauth::store::audit::AuditEvent {
        at: app.now(),
        event: "ca.rotated",
        client_id: None,
        subject: None,
        ip: None,
        detail: json!({}),
    };
    assert!(
        agentauth::store::bridge::start_epoch(&app.state.db, row, true, app.now(), audit)
            .await
            .unwrap()
    );
    app.state
        .agents
        .bridge
        .reload(&app.state.db, app.now())
        .await
        .unwrap();
    let r = app.get("/.well-known/ca-bundle.pem").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    let r = by_csr(&app, &a, &key.csr(Some(&nonce(&app).await)), &[]).await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("retry-after").is_some());
}
both!(epochs_rotate_and_drop);

/// SECURITY.md, "Bridge certificates" at the verifying end: the resource kit's
/// `verify_bridge_certificate` accepts a fresh certificate against the
/// served bundle and reads the agent out of it; it refuses one that lives
/// too long, one expired or not yet valid beyond 30 s of skew, a foreign
/// CA's, one signed by another key under our CA's name, a non-Ed25519
/// key, and malformed DER.
async fn the_kit_verifies_bridge_certificates(app: TestApp) {
    use agentauth_resource::bridge::{
        BridgeCertError, pem_certificates, verify_bridge_certificate,
    };
    let a = agent(&app, "alice", "read write", &[]).await;
    let key = EdKey::new();
    let body = ok(by_csr(&app, &a, &key.csr(Some(&nonce(&app).await)), &[]).await);
    let leaf = chain(body["access_token"].as_str().unwrap()).remove(0);
    let bundle = pem_certificates(
        std::str::from_utf8(&app.get("/.well-known/ca-bundle.pem").await.body).unwrap(),
    );
    let now = app.now();
    let verify = |der: &[u8], at: i64| verify_bridge_certificate(der, &bundle, ISSUER, 300, at);

    let identity = verify(&leaf, now).unwrap();
    assert_eq!(identity.agent_id, a.id);
    assert_eq!(identity.agent_uri, format!("{ISSUER}/agents/{}", a.id));
    assert_eq!(identity.scopes, ["read", "write"]);
    assert!(identity.owner.is_some());
    assert!(identity.client_auth && !identity.code_signing);
    assert_eq!(identity.public_key.as_slice(), key.pair.public_key_raw());
    assert_eq!(identity.x5t_s256, b64(&agentauth::crypto::sha256(&leaf)));
    // Skew: 30 s either way, no more.
    assert!(verify(&leaf, now + 300 + 29).is_ok());
    assert_eq!(verify(&leaf, now + 300 + 30), Err(BridgeCertError::Expired));
    assert_eq!(
        verify(&leaf, now - 30 - 31),
        Err(BridgeCertError::NotYetValid)
    );
    // Another issuer's name for the agent.
    assert_eq!(
        verify_bridge_certificate(&leaf, &bundle, "https://other.example", 300, now),
        Err(BridgeCertError::NoAgent)
    );

    let cas = app.state.agents.bridge.current();
    let ca = cas.issuing().unwrap();
    let subject = agentauth::agents::bridge::cert::Subject {
        issuer: ISSUER,
        agent_id: &a.id,
        owner_id: "o",
        scopes: vec!["read"],
        code_signing: false,
    };
    let public = agentauth::agents::bridge::cert::Ed25519Public(
        key.pair.public_key_raw().try_into().unwrap(),
    );
    // Our CA, an hour long: not a bridge certificate at 5 minutes.
    let long = agentauth::agents::bridge::cert::issue(ca, &public, &subject, now, 3600).unwrap();
    assert_eq!(verify(&long.der, now), Err(BridgeCertError::TooLong));
    // A P-256 key under our CA.
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec![format!("{ISSUER}/agents/{}", a.id)]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + 300).unwrap();
    let p256_cert = params.signed_by(&p256, &ca.issuer).unwrap();
    assert_eq!(
        verify(p256_cert.der(), now),
        Err(BridgeCertError::NotEd25519)
    );
    // A foreign CA; and one that copies our CA's name.
    for copy_name in [false, true] {
        let rogue_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut rogue = rcgen::CertificateParams::default();
        rogue.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        if copy_name {
            let mut name = rcgen::DistinguishedName::new();
            name.push(rcgen::DnType::OrganizationName, "auth.example.com");
            name.push(
                rcgen::DnType::CommonName,
                format!("agentauth bridge CA, epoch {}", ca.epoch),
            );
            rogue.distinguished_name = name;
        }
        let rogue = rcgen::CertifiedIssuer::self_signed(rogue, rogue_key).unwrap();
        let forged = params.signed_by(&key.pair, &rogue).unwrap();
        assert_eq!(
            verify(forged.der(), now),
            Err(if copy_name {
                BridgeCertError::BadSignature
            } else {
                BridgeCertError::UnknownCa
            })
        );
    }
    // Malformed.
    assert_eq!(verify(b"", now), Err(BridgeCertError::Malformed));
    assert_eq!(
        verify(&leaf[..leaf.len() - 1], now),
        Err(BridgeCertError::Malformed)
    );
    let mut trailing = leaf.clone();
    trailing.push(0);
    assert_eq!(verify(&trailing, now), Err(BridgeCertError::Malformed));
}
both!(the_kit_verifies_bridge_certificates);
