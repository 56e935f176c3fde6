//! An example agent's key (Ed25519, generated in the process; only its
//! public JWK leaves it), and what it signs: RFC 7523 client assertions
//! and RFC 9449 DPoP proofs. Shared by the agent examples, each of which
//! uses part of it.

#![allow(dead_code)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub struct AgentKey {
    encoding: EncodingKey,
    pub jwk: Value,
}

impl AgentKey {
    pub fn generate() -> anyhow::Result<Self> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("key generation failed"))?;
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("bad key"))?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        Ok(Self {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": "agent-key-1", "alg": "EdDSA" }),
        })
    }

    pub fn sign(&self, mut header: Header, claims: &Value) -> anyhow::Result<String> {
        header.alg = Algorithm::EdDSA;
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// RFC 7523 client assertion.
    pub fn assertion(&self, agent_id: &str, issuer: &str) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("agent-key-1".into());
        let now = now()?;
        self.sign(
            header,
            &json!({ "iss": agent_id, "sub": agent_id, "aud": issuer, "jti": nonce(),
                     "iat": now, "exp": now + 60 }),
        )
    }

    /// RFC 9449 DPoP proof for POST `url`.
    pub fn proof(&self, url: &str) -> anyhow::Result<String> {
        self.proof_for("POST", url, None)
    }

    /// RFC 9449 DPoP proof for `htm url`, with `ath` when presenting `token`.
    pub fn proof_for(&self, htm: &str, url: &str, token: Option<&str>) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(json!({
            "kty": "OKP", "crv": "Ed25519", "x": self.jwk["x"]
        }))?);
        let mut claims = json!({ "jti": nonce(), "htm": htm, "htu": url, "iat": now()? });
        if let Some(t) = token {
            claims["ath"] = json!(b64(&sha256(t.as_bytes())));
        }
        self.sign(header, &claims)
    }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

pub fn now() -> anyhow::Result<i64> {
    Ok(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
}

pub fn nonce() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SecureRandom::fill(&SystemRandom::new(), &mut bytes).ok();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
