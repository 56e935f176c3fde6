#![allow(clippy::expect_used, clippy::unwrap_used)]
//! Writes fresh RFC 9449 DPoP proofs, one per line, for load tests
//! (bench/compare.sh feeds them to wrk, one per request).
//!
//! ```sh
//! cargo run --release --example dpop_proofs -- 40000 POST http://127.0.0.1:18180/token > proofs.txt
//! ```

use std::io::{BufWriter, Write};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().unwrap_or_else(|| "1000".into()).parse()?;
    let htm = args.next().unwrap_or_else(|| "POST".into());
    let htu = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080/token".into());

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| anyhow::anyhow!("key generation failed"))?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("key parse failed"))?;
    let public = pair.public_key().as_ref();
    let header = json!({
        "typ": "dpop+jwt",
        "alg": "ES256",
        "jwk": { "kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&public[1..33]), "y": URL_SAFE_NO_PAD.encode(&public[33..65]) },
    });
    let header = URL_SAFE_NO_PAD.encode(header.to_string());
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();

    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in 0..count {
        let claims = json!({ "jti": format!("{iat}-{i}"), "htm": htm, "htu": htu, "iat": iat });
        let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = pair
            .sign(&rng, input.as_bytes())
            .map_err(|_| anyhow::anyhow!("signing failed"))?;
        writeln!(
            out,
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )?;
    }
    out.flush()?;
    Ok(())
}
