//! Keys fetched from the authorization server (feature `remote`): its RFC
//! 8414 metadata names the JWKS, whose keys are kept in memory and
//! refetched when a token names a `kid` we lack, at most once per
//! [`RemoteKeys::min_refetch`], so that forged kids cannot make every
//! request a fetch.
//!
//! ```no_run
//! # async fn run() -> Result<(), agentauth_resource::remote::RemoteError> {
//! use agentauth_resource::{ResourceVerifier, remote::RemoteKeys};
//! let keys = RemoteKeys::discover("https://auth.example.com").await?;
//! let verifier = ResourceVerifier::new("https://auth.example.com", "https://mcp.example.com/mcp", keys);
//! # let headers = http::HeaderMap::new();
//! let claims = verifier
//!     .verify_fetching("POST", "https://mcp.example.com/mcp", &headers, 1_800_000_000)
//!     .await;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, header};
use jsonwebtoken::jwk::JwkSet;

use crate::claims::AccessTokenClaims;
use crate::jwt::{KeySource, StaticKeys, VerifyingKey};
use crate::verifier::{ResourceError, ResourceVerifier};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("fetching {0}: {1}")]
    Fetch(String, String),
    #[error("{0} is not valid JSON of the expected shape: {1}")]
    Shape(String, String),
    #[error("the metadata names issuer {found:?}, not {expected:?}")]
    IssuerMismatch { expected: String, found: String },
}

/// The authorization server's signing keys, kept fresh.
pub struct RemoteKeys {
    issuer: String,
    jwks_uri: String,
    http: reqwest::Client,
    keys: RwLock<Arc<StaticKeys>>,
    last_fetch: Mutex<Instant>,
    /// Least time between refetches caused by unknown kids.
    pub min_refetch: Duration,
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, RemoteError> {
    let fail = |e: &dyn std::fmt::Display| RemoteError::Fetch(url.to_string(), e.to_string());
    let response = http.get(url).send().await.map_err(|e| fail(&e))?;
    if !response.status().is_success() {
        return Err(fail(&response.status()));
    }
    let body = response.bytes().await.map_err(|e| fail(&e))?;
    serde_json::from_slice(&body).map_err(|e| RemoteError::Shape(url.to_string(), e.to_string()))
}

async fn fetch_keys(http: &reqwest::Client, jwks_uri: &str) -> Result<StaticKeys, RemoteError> {
    let set: JwkSet = serde_json::from_value(get_json(http, jwks_uri).await?)
        .map_err(|e| RemoteError::Shape(jwks_uri.to_string(), e.to_string()))?;
    Ok(StaticKeys::from_jwks(&set))
}

/// RFC 6749 §2.3.1 `client_secret_basic`: both parts form-urlencoded,
/// then Base64.
pub(crate) fn basic_authorization(client_id: &str, client_secret: &str) -> String {
    use base64::Engine as _;
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        encode(client_id),
        encode(client_secret)
    ));
    format!("Basic {basic}")
}

pub(crate) fn http_client(for_url: &str) -> Result<reqwest::Client, RemoteError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| RemoteError::Fetch(for_url.to_string(), e.to_string()))
}

/// `{issuer}/.well-known/oauth-authorization-server`, whose `issuer` must
/// be `issuer` byte for byte (RFC 8414 §3.3): the client, the document and
/// its URL.
pub(crate) async fn authorization_server_metadata(
    issuer: &str,
) -> Result<(reqwest::Client, serde_json::Value, String), RemoteError> {
    let http = http_client(issuer)?;
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        issuer.trim_end_matches('/')
    );
    let metadata = get_json(&http, &url).await?;
    let found = metadata["issuer"].as_str().unwrap_or_default();
    if found != issuer {
        return Err(RemoteError::IssuerMismatch {
            expected: issuer.to_string(),
            found: found.to_string(),
        });
    }
    Ok((http, metadata, url))
}

impl RemoteKeys {
    /// Reads `{issuer}/.well-known/oauth-authorization-server` (whose
    /// `issuer` must be `issuer`, byte for byte: RFC 8414 §3.3) and fetches
    /// the JWKS it names.
    pub async fn discover(issuer: &str) -> Result<Self, RemoteError> {
        let (http, metadata, url) = authorization_server_metadata(issuer).await?;
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .ok_or_else(|| RemoteError::Shape(url.clone(), "no jwks_uri".into()))?
            .to_string();
        let keys = fetch_keys(&http, &jwks_uri).await?;
        Ok(Self {
            issuer: issuer.to_string(),
            jwks_uri,
            http,
            keys: RwLock::new(Arc::new(keys)),
            last_fetch: Mutex::new(Instant::now()),
            min_refetch: Duration::from_secs(10),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Fetches the JWKS again and replaces the keys.
    pub async fn refresh(&self) -> Result<(), RemoteError> {
        let keys = fetch_keys(&self.http, &self.jwks_uri).await?;
        if let Ok(mut slot) = self.keys.write() {
            *slot = Arc::new(keys);
        }
        Ok(())
    }

    /// Makes sure `kid` is known: refetches unless it was fetched within
    /// [`Self::min_refetch`]. `true` when the key is there afterwards.
    pub async fn refresh_for(&self, kid: &str) -> bool {
        if self.key(kid).is_some() {
            return true;
        }
        {
            let Ok(mut last) = self.last_fetch.lock() else {
                return false;
            };
            if last.elapsed() < self.min_refetch {
                return false;
            }
            *last = Instant::now();
        }
        self.refresh().await.is_ok() && self.key(kid).is_some()
    }
}

impl RemoteKeys {
    /// [`Self::refresh_for`] the `kid` of the token in `Authorization`.
    pub async fn refresh_for_request(&self, headers: &HeaderMap) {
        let kid = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .and_then(|(_, token)| jsonwebtoken::decode_header(token.trim()).ok())
            .and_then(|h| h.kid);
        if let Some(kid) = kid {
            self.refresh_for(&kid).await;
        }
    }
}

impl KeySource for RemoteKeys {
    fn key(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.keys.read().ok()?.key(kid)
    }
}

impl ResourceVerifier<RemoteKeys> {
    /// [`ResourceVerifier::verify`], after fetching the keys again when the
    /// token names a `kid` we lack (a rotation at the authorization
    /// server), within the refetch limit.
    pub async fn verify_fetching(
        &self,
        method: &str,
        url: &str,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<AccessTokenClaims, ResourceError> {
        self.keys.refresh_for_request(headers).await;
        self.verify(method, url, headers, now)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    use super::*;

    struct Key {
        encoding: EncodingKey,
        jwk: Value,
    }

    fn key(kid: &str) -> Key {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        Key {
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                        "x": b64(&public[1..33]), "y": b64(&public[33..65])}),
        }
    }

    fn token(key: &Key, issuer: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = key.jwk["kid"].as_str().map(str::to_string);
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(
            &header,
            &json!({"iss": issuer, "sub": "u", "aud": "https://mcp.example.com/mcp", "client_id": "c",
                    "jti": "j", "iat": 1_800_000_000, "exp": 1_800_000_900}),
            &key.encoding,
        )
        .unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn discovers_verifies_and_refetches_on_rotation_within_the_limit() {
        let first = key("k1");
        let second = key("k2");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let jwks = Arc::new(RwLock::new(json!({"keys": [first.jwk]})));
        let fetches = Arc::new(AtomicUsize::new(0));
        let app = {
            let (jwks, fetches, issuer) = (jwks.clone(), fetches.clone(), issuer.clone());
            axum::Router::new()
                .route(
                    "/.well-known/oauth-authorization-server",
                    axum::routing::get(move || {
                        let issuer = issuer.clone();
                        async move {
                            json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks.json")})
                                .to_string()
                        }
                    }),
                )
                .route(
                    "/jwks.json",
                    axum::routing::get(move || {
                        let (jwks, fetches) = (jwks.clone(), fetches.clone());
                        async move {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            jwks.read().unwrap().to_string()
                        }
                    }),
                )
        };
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut keys = RemoteKeys::discover(&issuer).await.unwrap();
        keys.min_refetch = Duration::ZERO;
        let mut verifier =
            ResourceVerifier::new(issuer.clone(), "https://mcp.example.com/mcp", keys);
        let url = "https://mcp.example.com/mcp";
        let now = 1_800_000_100;
        verifier
            .verify_fetching("POST", url, &bearer(&token(&first, &issuer)), now)
            .await
            .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        // The server rotates: a token under the new kid refetches once.
        *jwks.write().unwrap() = json!({"keys": [first.jwk, second.jwk]});
        verifier
            .verify_fetching("POST", url, &bearer(&token(&second, &issuer)), now)
            .await
            .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        // Forged kids do not make every request a fetch.
        verifier.keys.min_refetch = Duration::from_secs(3600);
        let stranger = key("k3");
        for _ in 0..5 {
            let err = verifier
                .verify_fetching("POST", url, &bearer(&token(&stranger, &issuer)), now)
                .await
                .unwrap_err();
            assert!(matches!(err, ResourceError::InvalidToken(_)));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        // A metadata document naming another issuer is refused.
        let err = RemoteKeys::discover(&format!("{issuer}/"))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, RemoteError::IssuerMismatch { .. }));
    }
}
