//! Workload federation and enterprise-managed authorization (RFC 7523
//! §2.1 JWT bearer grants): external issuers the operator trusts, their
//! keys, and how their tokens map to our identities.
//!
//! - A **workload** issuer (a CI system's OIDC tokens, a Kubernetes
//!   service account issuer) has rules mapping exact claim values (say
//!   GitHub Actions' `repository` and `ref`) to one agent: a valid token
//!   from it gets that agent a token or a passport with no stored secret.
//! - An **IdP** issues Identity Assertion JWTs (`typ: oauth-id-jag+jwt`,
//!   the MCP enterprise-managed authorization profile) for a user to a
//!   registered client; the client presents one and gets a token for that
//!   user. The user is the local account whose username equals the
//!   configured claim (`email` by default).
//!
//! Configured in `--federation-file` (TOML), read at start like the
//! resource registry. A file that cannot work is refused then, not at the
//! first assertion: an issuer's `jwks_uri` must be one the fetcher will
//! fetch (https, no userinfo or fragment, not a private IP literal), and
//! an issuer appears once per kind. The `issuer` itself is only compared,
//! byte for byte, with each assertion's `iss` (nothing is fetched from
//! it), so it need not be an https URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::agents::Agents;
use crate::oauth::single_use::SpentUntil;

/// JWT `typ` of an Identity Assertion JWT (ID-JAG).
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";

/// Longest remaining lifetime an external assertion may have.
const MAX_LIFETIME: i64 = 3600;
/// Clock skew allowed with an external issuer: past `exp`, and before
/// `nbf`/`iat`. A spent `jti` is kept this long past `exp` too.
pub const LEEWAY: i64 = 30;

#[derive(Debug, Default)]
pub struct Federation {
    workloads: Vec<Issuer>,
    idps: Vec<Issuer>,
}

impl Federation {
    /// Whether any IdP issues Identity Assertion JWTs here (metadata
    /// then advertises the ID-JAG profile).
    pub fn accepts_id_jags(&self) -> bool {
        !self.idps.is_empty()
    }
}

#[derive(Debug)]
struct Issuer {
    issuer: String,
    keys: Keys,
    /// Accepted `aud` values: the file's `audience`, or else our issuer
    /// and, for a workload issuer, our token endpoint too (RFC 7523 §3;
    /// the MCP workload-federation profile, SEP-1933, lets the assertion
    /// name either). An ID-JAG names the issuer.
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    rules: Vec<Rule>,
    /// IdPs: the claim naming the local user.
    user_claim: String,
}

#[derive(Debug)]
enum Keys {
    Uri(String),
    Static(Arc<JwkSet>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    /// Claims that must all be present with exactly these values.
    claims: BTreeMap<String, Value>,
    agent: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    workload: Vec<IssuerEntry>,
    #[serde(default)]
    idp: Vec<IssuerEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerEntry {
    issuer: String,
    jwks_uri: Option<String>,
    jwks_file: Option<std::path::PathBuf>,
    audience: Option<String>,
    algorithms: Option<Vec<String>>,
    #[serde(default, rename = "rule")]
    rules: Vec<Rule>,
    user_claim: Option<String>,
}

/// What a verified external token maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// A workload: this agent.
    Agent(String),
    /// An ID-JAG: this local username, for this client, with these
    /// optional scope and resource claims.
    User {
        username: String,
        client_id: String,
        scope: Option<String>,
        resource: Option<String>,
    },
}

/// Why an external assertion is refused (`invalid_grant`).
pub type Refusal = String;

impl Federation {
    /// The trusted issuers of `--federation-file` (none without one).
    pub fn from_config(config: &crate::config::Config) -> Result<Self, crate::config::ConfigError> {
        match &config.federation_file {
            Some((path, text)) => {
                Self::from_toml_fetching(text, &config.issuer, config.insecure_fetch).map_err(|e| {
                    crate::config::ConfigError::Federation(format!("{}: {e}", path.display()))
                })
            }
            None => Ok(Self::default()),
        }
    }

    /// The federation file `text`, checked: every issuer's `jwks_uri` must
    /// be https (local tests put their keys in a `jwks_file`).
    pub fn from_toml(text: &str, our_issuer: &str) -> Result<Self, String> {
        Self::from_toml_fetching(text, our_issuer, false)
    }

    /// [`Federation::from_toml`], where `insecure_fetch` (the tests-only
    /// `--insecure-fetch-for-tests-only`) lets `jwks_uri` be plain http or a private
    /// address, as the fetcher then fetches those.
    pub fn from_toml_fetching(
        text: &str,
        our_issuer: &str,
        insecure_fetch: bool,
    ) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let build = |entry: IssuerEntry, workload: bool| -> Result<Issuer, String> {
            if entry.issuer.is_empty() {
                return Err("an issuer needs a non-empty issuer".into());
            }
            let keys = match (entry.jwks_uri, entry.jwks_file) {
                (Some(uri), None) => {
                    fetchable(&uri, insecure_fetch).map_err(|why| {
                        format!(
                            "{}: jwks_uri {uri:?} cannot be fetched: {why}; keys are fetched over https only (for local tests, give the keys in a jwks_file instead)",
                            entry.issuer
                        )
                    })?;
                    Keys::Uri(uri)
                }
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                    Keys::Static(Arc::new(
                        serde_json::from_str(&text)
                            .map_err(|e| format!("{}: not a JWK Set: {e}", path.display()))?,
                    ))
                }
                _ => {
                    return Err(format!(
                        "{}: give exactly one of jwks_uri, jwks_file",
                        entry.issuer
                    ));
                }
            };
            let algorithms = entry
                .algorithms
                .unwrap_or_else(|| vec!["RS256".into(), "ES256".into(), "EdDSA".into()])
                .iter()
                .map(|a| match a.as_str() {
                    "RS256" => Ok(Algorithm::RS256),
                    "PS256" => Ok(Algorithm::PS256),
                    "ES256" => Ok(Algorithm::ES256),
                    "EdDSA" => Ok(Algorithm::EdDSA),
                    other => Err(format!(
                        "{}: algorithm {other:?} is not accepted",
                        entry.issuer
                    )),
                })
                .collect::<Result<_, _>>()?;
            if workload && entry.rules.is_empty() {
                return Err(format!(
                    "{}: a workload issuer needs at least one rule",
                    entry.issuer
                ));
            }
            if workload && entry.rules.iter().any(|r| r.claims.is_empty()) {
                return Err(format!(
                    "{}: every rule names at least one claim",
                    entry.issuer
                ));
            }
            Ok(Issuer {
                issuer: entry.issuer,
                keys,
                audiences: match entry.audience {
                    Some(audience) => vec![audience],
                    None if workload => vec![our_issuer.to_string(), format!("{our_issuer}/token")],
                    None => vec![our_issuer.to_string()],
                },
                algorithms,
                rules: entry.rules,
                user_claim: entry.user_claim.unwrap_or_else(|| "email".into()),
            })
        };
        let federation = Self {
            workloads: file
                .workload
                .into_iter()
                .map(|e| build(e, true))
                .collect::<Result<_, _>>()?,
            idps: file
                .idp
                .into_iter()
                .map(|e| build(e, false))
                .collect::<Result<_, _>>()?,
        };
        // Assertions find their issuer by `iss`: a second entry for the
        // same one would never be read.
        for list in [&federation.workloads, &federation.idps] {
            for (i, issuer) in list.iter().enumerate() {
                if list[..i].iter().any(|o| o.issuer == issuer.issuer) {
                    return Err(format!("{}: the issuer is listed twice", issuer.issuer));
                }
            }
        }
        Ok(federation)
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.idps.is_empty()
    }
}

/// Whether the fetcher will fetch `uri` (its name aside): the same rule,
/// checked at start, so that a file whose keys could never be fetched
/// stops the server instead of failing every assertion (SECURITY.md,
/// "Federation files").
fn fetchable(uri: &str, insecure_fetch: bool) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|_| "not a URL".to_string())?;
    crate::fetch::check_url(&url, insecure_fetch).map_err(|e| match e {
        crate::fetch::FetchError::Forbidden(why) => why.to_string(),
        other => other.to_string(),
    })
}

/// A verified external assertion: what it maps to, its `jti` (qualified
/// by its issuer), and until when the spent `jti` is kept (its `exp` plus
/// [`LEEWAY`], the last second it is accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub mapped: Mapped,
    pub jti: String,
    pub spent_until: SpentUntil,
}

/// Verifies an external assertion and maps it.
pub async fn verify(agents: &Agents, assertion: &str) -> Result<Verified, Refusal> {
    let found = agents.federation.find(assertion)?;
    let claims = match &found.issuer.keys {
        Keys::Static(keys) => check(assertion, &found.header, keys, found.issuer)?,
        Keys::Uri(uri) => {
            let iss = &found.issuer.issuer;
            let keys = agents
                .jwks
                .get(uri, false)
                .await
                .map_err(|_| format!("the keys of {iss} could not be fetched"))?;
            match check(assertion, &found.header, &keys, found.issuer) {
                Ok(c) => c,
                // The issuer may have rotated its keys: refetch once.
                Err(_) => {
                    let keys = agents
                        .jwks
                        .get(uri, true)
                        .await
                        .map_err(|_| format!("the keys of {iss} could not be fetched"))?;
                    check(assertion, &found.header, &keys, found.issuer)?
                }
            }
        }
    };
    found.accept(&claims, agents.clock.now())
}

/// An assertion's trusted issuer, found by its unverified `iss` and `typ`.
struct Found<'a> {
    issuer: &'a Issuer,
    header: jsonwebtoken::Header,
    is_jag: bool,
}

impl Federation {
    /// [`verify`] for issuers with keys in a file, with no fetching and no
    /// state: pure, for the fuzzer. An issuer with a `jwks_uri` is refused.
    pub fn verify_offline(&self, assertion: &str, now: i64) -> Result<Verified, Refusal> {
        let found = self.find(assertion)?;
        let Keys::Static(keys) = &found.issuer.keys else {
            return Err("the issuer's keys are fetched, not at hand".into());
        };
        let claims = check(assertion, &found.header, keys, found.issuer)?;
        found.accept(&claims, now)
    }

    fn find(&self, assertion: &str) -> Result<Found<'_>, Refusal> {
        let header = jsonwebtoken::decode_header(assertion)
            .map_err(|_| "the assertion is not a JWT".to_string())?;
        #[derive(Deserialize)]
        struct Iss {
            iss: String,
        }
        let iss = jsonwebtoken::dangerous::insecure_decode::<Iss>(assertion)
            .map_err(|_| "the assertion has no iss".to_string())?
            .claims
            .iss;
        let is_jag = header.typ.as_deref() == Some(ID_JAG_TYP);
        let list = if is_jag { &self.idps } else { &self.workloads };
        let issuer = list
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| format!("issuer {iss:?} is not trusted here"))?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(format!(
                "algorithm {:?} is not accepted from {iss}",
                header.alg
            ));
        }
        Ok(Found {
            issuer,
            header,
            is_jag,
        })
    }
}

impl Found<'_> {
    /// The verified claims' times, `jti` and mapping.
    fn accept(&self, claims: &Map<String, Value>, now: i64) -> Result<Verified, Refusal> {
        let (issuer, iss) = (self.issuer, &self.issuer.issuer);
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let leeway = LEEWAY;
        if exp <= now - leeway {
            return Err("the assertion has expired".into());
        }
        let not_before = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_i64)
                .is_some_and(|t| t > now + leeway)
        };
        if not_before("nbf") || not_before("iat") {
            return Err("the assertion is not valid yet".into());
        }
        if exp > now + MAX_LIFETIME {
            return Err("the assertion lives too long (at most an hour)".into());
        }
        let jti = claims
            .get("jti")
            .and_then(Value::as_str)
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or("the assertion needs a jti")?
            .to_string();
        let mapped = if self.is_jag {
            let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
            Mapped::User {
                username: text(&issuer.user_claim)
                    .ok_or_else(|| format!("the assertion has no {} claim", issuer.user_claim))?,
                client_id: text("client_id").ok_or("the ID-JAG names no client_id")?,
                scope: text("scope"),
                resource: text("resource"),
            }
        } else {
            let rule = issuer
                .rules
                .iter()
                .find(|r| r.claims.iter().all(|(k, v)| claims.get(k) == Some(v)))
                .ok_or("no rule maps this subject to an agent")?;
            Mapped::Agent(rule.agent.clone())
        };
        Ok(Verified {
            mapped,
            jti: format!("{iss}#{jti}"),
            spent_until: SpentUntil::new(exp, leeway),
        })
    }
}

fn check(
    assertion: &str,
    header: &jsonwebtoken::Header,
    keys: &JwkSet,
    issuer: &Issuer,
) -> Result<Map<String, Value>, Refusal> {
    let mut validation = Validation::new(header.alg);
    validation.algorithms = vec![header.alg];
    validation.set_issuer(&[&issuer.issuer]);
    validation.set_audience(&issuer.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // Time is checked against the server's clock by the caller.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let candidates = keys
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        // A key that names its algorithm is used with that one only.
        .filter(|k| {
            k.common
                .key_algorithm
                .is_none_or(|ka| ka.to_string() == format!("{:?}", header.alg))
        });
    let mut last = "no key of the issuer matches the assertion".to_string();
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Map<String, Value>>(assertion, &key, &validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                last = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                        format!(
                            "the assertion's aud must be {}",
                            issuer.audiences.join(" or ")
                        )
                    }
                    _ => "the assertion's signature or claims are invalid".into(),
                }
            }
        }
    }
    Err(last)
}
