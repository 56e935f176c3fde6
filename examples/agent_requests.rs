#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Request bodies for the agent benchmarks (bench/agents.sh): a fresh,
//! single-use client assertion per line, so that wrk can send one per
//! request.
//!
//! ```sh
//! agent_requests keygen DIR            # DIR/a.jwk, DIR/b.jwk (public) and their .pk8
//! agent_requests bodies GRANT ISSUER A_ID B_ID DIR COUNT > bodies.txt
//! ```
//!
//! GRANT is `client_credentials` (agent A), `passport` (agent A, naming
//! B), `exchange` (agent B exchanging a passport of A for a token; the
//! passport is fetched once from ISSUER), or `bridge_csr` / `bridge_dpop`
//! (agent A asking for a bridge certificate of key B, by a CSR or by a
//! DPoP proof: each line needs a server nonce, fetched from ISSUER now,
//! so the bodies must be used within two minutes; a DPoP line is
//! `body<TAB>proof`). Every body asks for
//! https://mcp.example.com/mcp where a resource is needed.

use std::io::{BufWriter, Write};
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const MCP: &str = "https://mcp.example.com/mcp";

fn keygen(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for name in ["a", "b"] {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("keygen"))?;
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("key"))?;
        let jwk = json!({ "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": name,
                          "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()) });
        std::fs::write(dir.join(format!("{name}.jwk")), jwk.to_string())?;
        std::fs::write(dir.join(format!("{name}.pk8")), pkcs8.as_ref())?;
    }
    Ok(())
}

struct Signer {
    key: EncodingKey,
    kid: String,
    id: String,
    aud: String,
}

impl Signer {
    fn load(dir: &Path, name: &str, id: &str, issuer: &str) -> anyhow::Result<Self> {
        Ok(Self {
            key: EncodingKey::from_ed_der(&std::fs::read(dir.join(format!("{name}.pk8")))?),
            kid: name.into(),
            id: id.into(),
            aud: issuer.into(),
        })
    }

    fn assertion(&self, jti: usize, now: u64) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            &json!({ "iss": self.id, "sub": self.id, "aud": self.aud,
                     "jti": format!("bench-{now}-{jti}"), "iat": now, "exp": now + 300 }),
            &self.key,
        )
        .unwrap()
    }

    fn auth(&self, jti: usize, now: u64) -> String {
        format!(
            "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={}",
            self.assertion(jti, now)
        )
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("keygen") => return keygen(Path::new(&args[1])),
        Some("bodies") => {}
        _ => anyhow::bail!(
            "usage: agent_requests keygen DIR | bodies GRANT ISSUER A_ID B_ID DIR COUNT"
        ),
    }
    let [_, grant, issuer, a_id, b_id, dir, count] = args.as_slice() else {
        anyhow::bail!("usage: agent_requests bodies GRANT ISSUER A_ID B_ID DIR COUNT");
    };
    let dir = Path::new(dir);
    let count: usize = count.parse()?;
    let a = Signer::load(dir, "a", a_id, issuer)?;
    let b = Signer::load(dir, "b", b_id, issuer)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let out = std::io::stdout();
    let mut out = BufWriter::new(out.lock());
    match grant.as_str() {
        "client_credentials" => {
            for i in 0..count {
                writeln!(
                    out,
                    "grant_type=client_credentials&resource={}&{}",
                    enc(MCP),
                    a.auth(i, now)
                )?;
            }
        }
        "passport" => {
            for i in 0..count {
                writeln!(
                    out,
                    "grant_type={}&audience={}&{}",
                    enc("urn:agentauth:params:grant-type:passport"),
                    enc(b_id),
                    a.auth(i, now)
                )?;
            }
        }
        "exchange" => {
            let body = format!(
                "grant_type={}&audience={}&{}",
                enc("urn:agentauth:params:grant-type:passport"),
                enc(b_id),
                a.auth(usize::MAX, now)
            );
            let response: serde_json::Value = serde_json::from_slice(
                &reqwest::Client::new()
                    .post(format!("{issuer}/token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await?
                    .bytes()
                    .await?,
            )?;
            let passport = response["access_token"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("no passport: {response}"))?;
            for i in 0..count {
                writeln!(
                    out,
                    "grant_type={}&subject_token={}&subject_token_type={}&resource={}&{}",
                    enc("urn:ietf:params:oauth:grant-type:token-exchange"),
                    passport,
                    enc("urn:agentauth:params:token-type:passport"),
                    enc(MCP),
                    b.auth(i, now)
                )?;
            }
        }
        "bridge_csr" | "bridge_dpop" => {
            let http = reqwest::Client::new();
            let pk8 = std::fs::read(dir.join("b.pk8"))?;
            let cert_key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
                &pk8.as_slice().into(),
                &rcgen::PKCS_ED25519,
            )?;
            let token_url = format!("{issuer}/token");
            for i in 0..count {
                let nonce: serde_json::Value = serde_json::from_slice(
                    &http
                        .post(format!("{issuer}/bridge-certs/nonce"))
                        .send()
                        .await?
                        .bytes()
                        .await?,
                )?;
                let nonce = nonce["c_nonce"].as_str().unwrap_or_default();
                let grant_type = enc("urn:agentauth:params:grant-type:bridge-cert");
                if grant == "bridge_csr" {
                    let attribute = agentauth::agents::bridge::csr::challenge_password(nonce)
                        .ok_or_else(|| anyhow::anyhow!("nonce too long"))?;
                    let csr = rcgen::CertificateParams::default()
                        .serialize_request_with_attributes(&cert_key, vec![attribute])?;
                    writeln!(
                        out,
                        "grant_type={grant_type}&csr={}&{}",
                        URL_SAFE_NO_PAD.encode(csr.der()),
                        a.auth(i, now)
                    )?;
                } else {
                    let mut header = Header::new(Algorithm::EdDSA);
                    header.typ = Some("dpop+jwt".into());
                    header.jwk = Some(serde_json::from_value(json!({
                        "kty": "OKP", "crv": "Ed25519",
                        "x": URL_SAFE_NO_PAD.encode(cert_key.public_key_raw()),
                    }))?);
                    let proof = jsonwebtoken::encode(
                        &header,
                        &json!({ "jti": format!("bench-{now}-{i}"), "htm": "POST",
                                 "htu": token_url, "iat": now, "nonce": nonce }),
                        &b.key,
                    )?;
                    writeln!(out, "grant_type={grant_type}&{}\t{proof}", a.auth(i, now))?;
                }
            }
        }
        other => anyhow::bail!("unknown grant {other}"),
    }
    Ok(())
}
