//! The resource registry: which protected resources tokens may name, the
//! scopes each offers, and which kinds of client may get a token for it
//! with no user (`client_credentials`).
//!
//! It is configuration, not data: built once at start from
//! `--resources-file` (TOML), `--resource` and `--scopes`, the same on
//! every node, and printed by `agentauth resources`. A token's `aud` is
//! always a registered resource (in its registered spelling) or the
//! default audience, unless the operator opens resources with
//! `--open-resources`.

pub mod details;
pub mod metadata;

use std::collections::HashMap;

use serde::Deserialize;
use url::Url;

use crate::oauth::client_kind::ClientKind;
use crate::oauth::resource::ResourceUri;
use crate::oauth::scope::Scope;

/// One protected resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// As registered: the `aud` of its tokens, byte for byte.
    pub uri: String,
    pub name: String,
    /// Scopes it offers; `None`: any well-formed scope.
    pub scopes: Option<Scope>,
    /// Kinds of client that may get its tokens by `client_credentials`.
    pub client_credentials: Vec<ClientKind>,
    /// Whether its tokens are DPoP-bound (RFC 9449): always (RFC 9728
    /// `dpop_bound_access_tokens_required`), when the client proves a key
    /// (the default), or never (a bearer-only verifier would refuse them).
    pub dpop: DpopPolicy,
    /// Whether an agent may get a passport naming it (`aud`): only for a
    /// resource that verifies passports itself (the kit's
    /// `accept_passports`). Off by default: a passport is an identity, not
    /// an access token (SECURITY.md, "Passport used as an access token").
    pub accept_passports: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct ResourceRegistry {
    by_key: HashMap<String, Resource>,
    /// Registered order, for display.
    order: Vec<String>,
    /// Whether any resource has a DPoP policy but the default (so that
    /// token requests skip the check when none does).
    any_dpop_rule: bool,
    /// Tokens requested with no `resource`.
    default: Resource,
    open: bool,
    default_client_credentials: Vec<ClientKind>,
    /// `{issuer}/agents/`: an agent as an audience, so that a user can
    /// delegate to it (token exchange takes such a token).
    agents_prefix: Option<String>,
    /// RFC 9396 types the resources declared.
    pub details: details::DetailTypes,
}

/// What a resource does with DPoP-bound tokens (`dpop` in the resources
/// file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DpopPolicy {
    /// Only DPoP-bound tokens: a request without a proof is refused.
    Required,
    /// Bound when the client sends a proof, bearer otherwise.
    #[default]
    Accepted,
    /// Never bound: a bearer token even when the client sends a proof
    /// (RFC 9449 §5 leaves it to the server; `token_type` says `Bearer`).
    /// For resources whose verifier takes only the `Bearer` scheme.
    Refused,
}

/// The DPoP policy of one token's resources together.
#[derive(Debug, PartialEq, Eq)]
pub enum DpopRule<'a> {
    /// This resource requires a proof.
    Required(&'a str),
    Accepted,
    /// This resource refuses bound tokens.
    Refused(&'a str),
}

/// Why a request may not have the token it asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Denial {
    /// RFC 8707 §2 `invalid_target`.
    Target(String),
    /// RFC 6749 §5.2 `invalid_scope`.
    Scope(String),
    /// RFC 6749 §5.2 `unauthorized_client`.
    Client(String),
    /// RFC 9396 §5 `invalid_authorization_details`.
    Details(String),
}

/// The `--resources-file` format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    open_resources: bool,
    /// Kinds that may use client_credentials where an entry does not say,
    /// and for the default audience.
    client_credentials: Option<Vec<ClientKind>>,
    #[serde(default, rename = "resource")]
    resources: Vec<FileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    uri: String,
    name: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    client_credentials: Option<Vec<ClientKind>>,
    /// The older spelling of `dpop = "required"`.
    #[serde(default)]
    dpop_bound_access_tokens_required: bool,
    dpop: Option<DpopPolicy>,
    #[serde(default)]
    accept_passports: bool,
    /// RFC 9396 types this resource takes (`[[resource.authorization_details]]`).
    #[serde(default)]
    authorization_details: Vec<details::DetailType>,
}

/// What the registry is built from.
pub struct Sources<'a> {
    /// The text of `--resources-file`, if one was given.
    pub file: Option<&'a str>,
    /// `--resource` URIs: each offers `scopes` (any scope without them).
    pub flags: &'a [String],
    /// `--scopes`: what the default audience and the `--resource`
    /// resources offer; `None` lets the default audience take any scope.
    pub scopes: Option<&'a Scope>,
    pub default_audience: &'a str,
    /// Whether the default audience was chosen (`--default-audience`):
    /// when it was not and exactly one resource is registered, requests
    /// with no `resource` are for that resource (Codex sends none, also
    /// when it refreshes).
    pub default_audience_set: bool,
    pub open: bool,
    /// The issuer: `{issuer}/agents/{id}` names an agent as an audience.
    pub issuer: Option<&'a str>,
}

/// The key a resource is looked up by: the URL in WHATWG-normalized form
/// (scheme and host lower-cased, default port dropped, an empty path
/// written `/`), so that `https://MCP.example.com` finds
/// `https://mcp.example.com/`.
fn key(uri: &str) -> String {
    Url::parse(uri).map_or_else(|_| uri.to_string(), |u| u.to_string())
}

/// Whether two resource URIs name the same resource (after normalization).
pub fn same_resource(a: &str, b: &str) -> bool {
    a == b || key(a) == key(b)
}

/// RFC 9396 with RFC 8707: the resources of a request whose checked
/// `details` name `locations`. With `resource` given, every location must
/// be among them; with none, the locations are the resources.
pub fn with_locations(
    mut requested: Vec<ResourceUri>,
    details: Option<&[serde_json::Value]>,
) -> Result<Vec<ResourceUri>, Denial> {
    let locations = details.map(details::locations).unwrap_or_default();
    if requested.is_empty() {
        for l in &locations {
            requested.push(ResourceUri::parse(l).map_err(|why| Denial::Target(why.into()))?);
        }
    } else if let Some(l) = locations
        .iter()
        .find(|l| !requested.iter().any(|r| same_resource(r.as_str(), l)))
    {
        return Err(Denial::Details(format!(
            "authorization_details names {l:?}, which is not among the requested resources"
        )));
    }
    Ok(requested)
}

/// The resources domain: which resources we issue tokens for, and what
/// they publish about themselves (for consent pages).
pub struct Resources {
    pub registry: std::sync::Arc<ResourceRegistry>,
    pub metadata: metadata::Metadata,
}

impl ResourceRegistry {
    /// The registry `serve` runs with: `--resources-file`, `--resource`
    /// and `--scopes` of the parsed configuration.
    pub fn from_config(config: &crate::config::Config) -> Result<Self, crate::config::ConfigError> {
        Self::build(Sources {
            file: config
                .resources_file
                .as_ref()
                .map(|(_, text)| text.as_str()),
            flags: &config.resource_flags,
            scopes: config.scopes.as_ref(),
            default_audience: &config.default_audience,
            default_audience_set: config.default_audience_set,
            open: config.open_resources,
            issuer: Some(&config.issuer),
        })
        .map_err(|e| match &config.resources_file {
            Some((path, _)) => {
                crate::config::ConfigError::Resources(format!("{}: {e}", path.display()))
            }
            None => crate::config::ConfigError::Resources(e),
        })
    }

    pub fn build(sources: Sources<'_>) -> Result<Self, String> {
        let file: File = match sources.file {
            Some(text) => toml::from_str(text).map_err(|e| e.to_string())?,
            None => File {
                open_resources: false,
                client_credentials: None,
                resources: Vec::new(),
            },
        };
        let default_client_credentials = file
            .client_credentials
            .unwrap_or_else(|| ClientKind::VOUCHED.to_vec());
        let mut registry = Self {
            by_key: HashMap::new(),
            order: Vec::new(),
            any_dpop_rule: false,
            default: Resource {
                uri: sources.default_audience.to_string(),
                name: "default audience".into(),
                scopes: sources.scopes.cloned(),
                client_credentials: default_client_credentials.clone(),
                dpop: DpopPolicy::Accepted,
                accept_passports: false,
            },
            open: sources.open || file.open_resources,
            default_client_credentials,
            agents_prefix: sources.issuer.map(crate::store::agents::audience_prefix),
            details: Default::default(),
        };
        for entry in file.resources {
            let scopes = Scope::parse(&entry.scopes.join(" "))
                .map_err(|e| format!("resource {:?}: {e}", entry.uri))?;
            if entry.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                return Err(format!(
                    "resource {:?}: each scope is one token with no spaces",
                    entry.uri
                ));
            }
            let dpop = match (entry.dpop, entry.dpop_bound_access_tokens_required) {
                (None, false) => DpopPolicy::Accepted,
                (None, true) | (Some(DpopPolicy::Required), _) => DpopPolicy::Required,
                (Some(policy), false) => policy,
                (Some(_), true) => {
                    return Err(format!(
                        "resource {:?}: dpop_bound_access_tokens_required contradicts its dpop",
                        entry.uri
                    ));
                }
            };
            for declared in entry.authorization_details {
                registry
                    .details
                    .add(&entry.uri, declared)
                    .map_err(|e| format!("resource {:?}: {e}", entry.uri))?;
            }
            registry.add(Resource {
                name: entry.name.unwrap_or_else(|| entry.uri.clone()),
                scopes: Some(scopes),
                client_credentials: entry
                    .client_credentials
                    .unwrap_or_else(|| registry.default_client_credentials.clone()),
                dpop,
                accept_passports: entry.accept_passports,
                uri: entry.uri,
            })?;
        }
        for uri in sources
            .flags
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
        {
            registry.add(Resource {
                uri: uri.to_string(),
                name: uri.to_string(),
                scopes: sources.scopes.cloned(),
                client_credentials: registry.default_client_credentials.clone(),
                dpop: DpopPolicy::Accepted,
                accept_passports: false,
            })?;
        }
        if !sources.default_audience_set
            && let [only] = registry.order.as_slice()
            && let Some(resource) = registry.by_key.get(only)
        {
            registry.default = resource.clone();
        }
        Ok(registry)
    }

    fn add(&mut self, resource: Resource) -> Result<(), String> {
        ResourceUri::parse(&resource.uri).map_err(|why| format!("{why}: {:?}", resource.uri))?;
        let key = key(&resource.uri);
        if key == self::key(&self.default.uri) {
            // The default audience registered by name: its entry governs
            // requests with no `resource` too.
            self.default = resource.clone();
        }
        self.any_dpop_rule |= resource.dpop != DpopPolicy::Accepted;
        if self.by_key.insert(key.clone(), resource).is_some() {
            return Err(format!("resource {key:?} is registered twice"));
        }
        self.order.push(key);
        Ok(())
    }

    /// Registered resources, in registered order.
    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.order.iter().filter_map(|k| self.by_key.get(k))
    }

    pub fn default_audience(&self) -> &Resource {
        &self.default
    }

    /// Whether a token for `resources` (none: the default audience) is
    /// DPoP-bound: one that requires it and one that refuses it cannot
    /// share a token (`invalid_target`).
    pub fn dpop_rule(&self, resources: &[ResourceUri]) -> Result<DpopRule<'_>, Denial> {
        if !self.any_dpop_rule {
            return Ok(DpopRule::Accepted);
        }
        let policies: Vec<&Resource> = match resources {
            [] => vec![&self.default],
            some => some
                .iter()
                .filter_map(|r| self.by_key.get(&key(r.as_str())))
                .collect(),
        };
        let find = |p: DpopPolicy| policies.iter().find(|r| r.dpop == p);
        match (find(DpopPolicy::Required), find(DpopPolicy::Refused)) {
            (Some(a), Some(b)) => Err(Denial::Target(format!(
                "resource {:?} takes only DPoP-bound tokens and {:?} none: ask for them apart",
                a.uri, b.uri
            ))),
            (Some(r), None) => Ok(DpopRule::Required(&r.uri)),
            (None, Some(r)) => Ok(DpopRule::Refused(&r.uri)),
            (None, None) => Ok(DpopRule::Accepted),
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Scopes a client may register (RFC 7591 §2), and what a client that
    /// registers none receives: everything any resource offers. `None`
    /// when nothing restricts scopes (no `--scopes`, no resource with
    /// scopes): any well-formed scope. A resource that offers any scope
    /// adds nothing here.
    pub fn scopes_supported(&self) -> Option<Scope> {
        let mut offered = std::iter::once(&self.default)
            .chain(self.iter())
            .filter_map(|r| r.scopes.as_ref())
            .peekable();
        offered.peek()?;
        Some(offered.fold(Scope::default(), |all, s| all.union(s)))
    }

    /// `{issuer}/agents/{id}`: an agent as an audience (any scope; the
    /// exchange that takes such a token checks the agent).
    pub fn is_agent_audience(&self, uri: &str) -> bool {
        self.agents_prefix.as_deref().is_some_and(|prefix| {
            uri.strip_prefix(prefix)
                .is_some_and(|id| id.starts_with("agent-") && !id.contains(['/', '?', '#']))
        })
    }

    /// The registered resource `uri` names (in any spelling).
    pub fn get(&self, uri: &str) -> Option<&Resource> {
        self.by_key.get(&key(uri))
    }

    /// The resource `uri` names for a passport's `aud`: a registered one,
    /// or the default audience (which a token with no `resource` is for,
    /// registered or not). `None`: not a resource of this server.
    pub fn passport_target(&self, uri: &str) -> Option<&Resource> {
        self.get(uri)
            .or_else(|| same_resource(uri, &self.default.uri).then_some(&self.default))
    }

    /// RFC 9396 §5: a request's `authorization_details`, checked against
    /// the declared types, each entry with its `locations` filled in.
    pub fn check_details(&self, text: &str) -> Result<Vec<serde_json::Value>, Denial> {
        details::parse(text)
            .and_then(|entries| self.details.check(entries))
            .map_err(|why| Denial::Details(format!("authorization_details: {why}")))
    }

    /// The resources a request names, as registered. Unregistered ones are
    /// `invalid_target` unless resources are open.
    pub fn resolve(&self, requested: &[ResourceUri]) -> Result<Targets<'_>, Denial> {
        let mut list = Vec::with_capacity(requested.len());
        for uri in requested {
            match self.by_key.get(&key(uri.as_str())) {
                Some(resource) => {
                    let registered = ResourceUri::parse(&resource.uri)
                        .map_err(|why| Denial::Target(why.into()))?;
                    if !list.iter().any(|(u, _)| u == &registered) {
                        list.push((registered, Some(resource)));
                    }
                }
                None if self.open || self.is_agent_audience(uri.as_str()) => {
                    list.push((uri.clone(), None));
                }
                None => {
                    return Err(Denial::Target(format!(
                        "resource {:?} is not registered at this server",
                        uri.as_str()
                    )));
                }
            }
        }
        Ok(Targets {
            list,
            default: &self.default,
        })
    }
}

/// The resources one token is for, resolved against the registry.
pub struct Targets<'r> {
    /// `None` beside a URI: unregistered, allowed by `--open-resources`.
    list: Vec<(ResourceUri, Option<&'r Resource>)>,
    default: &'r Resource,
}

impl Targets<'_> {
    /// The token's audience values (empty: the default audience).
    pub fn uris(&self) -> Vec<ResourceUri> {
        self.list.iter().map(|(u, _)| u.clone()).collect()
    }

    /// What each audience offers: `None` is any scope.
    fn offers(&self) -> Vec<(&str, Option<&Scope>)> {
        if self.list.is_empty() {
            return vec![(self.default.uri.as_str(), self.default.scopes.as_ref())];
        }
        self.list
            .iter()
            .map(|(u, r)| (u.as_str(), r.and_then(|r| r.scopes.as_ref())))
            .collect()
    }

    /// Every requested scope must be offered by every resource the token
    /// is for: a token for two resources must not carry one's scopes to
    /// the other. `offline_access` is the server's, not a resource's.
    pub fn check_scope(&self, scope: &Scope) -> Result<(), Denial> {
        for (uri, offered) in self.offers() {
            if let Some(offered) = offered
                && let Some(extra) = scope
                    .missing_from(offered)
                    .find(|s| *s != crate::oauth::scope::OFFLINE_ACCESS)
            {
                return Err(Denial::Scope(format!(
                    "resource {uri:?} does not offer scope {extra:?}"
                )));
            }
        }
        Ok(())
    }

    /// The scope of a request that names none (RFC 6749 §3.3): what the
    /// client may have, less what the resources do not offer.
    pub fn narrow(&self, allowed: &Scope) -> Scope {
        self.offers()
            .into_iter()
            .fold(allowed.clone(), |scope, (_, offered)| match offered {
                Some(offered) => scope.intersection(offered),
                None => scope,
            })
    }

    /// `client_credentials` (no user): the client's kind must be listed by
    /// every resource. Unregistered resources (open mode) follow the
    /// default audience's list.
    pub fn check_client_credentials(&self, kind: ClientKind) -> Result<(), Denial> {
        let lists: Vec<(&str, &[ClientKind])> = if self.list.is_empty() {
            vec![(&self.default.uri, &self.default.client_credentials)]
        } else {
            self.list
                .iter()
                .map(|(u, r)| {
                    (
                        u.as_str(),
                        r.map_or(&self.default.client_credentials[..], |r| {
                            &r.client_credentials[..]
                        }),
                    )
                })
                .collect()
        };
        for (uri, kinds) in lists {
            if !kinds.contains(&kind) {
                return Err(Denial::Client(format!(
                    "a client of kind {kind} may not get tokens for {uri:?} by \
                     client_credentials; the resource accepts them through a user's \
                     authorization{}",
                    if kind == ClientKind::OwnerAgent {
                        " (an agent made in the console acts on its own only where the \
                         resource's operator lists owner_agent)"
                    } else {
                        ""
                    }
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        Scope::parse(s).unwrap()
    }

    fn registry(file: &str, open: bool) -> ResourceRegistry {
        ResourceRegistry::build(Sources {
            file: Some(file),
            flags: &["https://quick.example/mcp".into()],
            scopes: Some(&scope("read")),
            default_audience: "https://as.example",
            default_audience_set: true,
            open,
            issuer: Some("https://as.example"),
        })
        .unwrap()
    }

    const FILE: &str = r#"
        [[resource]]
        uri = "https://MCP.example.com"
        name = "MCP"
        scopes = ["tools", "prompts"]

        [[resource]]
        uri = "https://files.example.com/api"
        scopes = ["files:read"]
        client_credentials = ["operator"]
    "#;

    fn uris(list: &[&str]) -> Vec<ResourceUri> {
        list.iter()
            .map(|u| ResourceUri::parse(u).unwrap())
            .collect()
    }

    #[test]
    fn resolves_registered_spelling_and_refuses_unknown() {
        let r = registry(FILE, false);
        let t = r.resolve(&uris(&["https://mcp.example.com/"])).unwrap();
        assert_eq!(t.uris()[0].as_str(), "https://MCP.example.com");
        assert!(matches!(
            r.resolve(&uris(&["https://evil.example/"])),
            Err(Denial::Target(_))
        ));
        let open = registry(FILE, true);
        let t = open.resolve(&uris(&["https://evil.example/"])).unwrap();
        assert_eq!(t.uris()[0].as_str(), "https://evil.example/");
        assert!(
            r.resolve(&uris(&["https://as.example/agents/agent-abc"]))
                .is_ok()
        );
        assert!(
            r.resolve(&uris(&["https://as.example/agents/x/y"]))
                .is_err()
        );
    }

    #[test]
    fn scopes_must_be_offered_by_every_resource() {
        let r = registry(FILE, false);
        let both = r
            .resolve(&uris(&[
                "https://mcp.example.com",
                "https://files.example.com/api",
            ]))
            .unwrap();
        assert!(matches!(
            both.check_scope(&scope("tools")),
            Err(Denial::Scope(_))
        ));
        assert_eq!(both.narrow(&scope("tools files:read")), Scope::default());
        let one = r.resolve(&uris(&["https://mcp.example.com"])).unwrap();
        assert!(one.check_scope(&scope("tools prompts")).is_ok());
        assert_eq!(one.narrow(&scope("tools admin")), scope("tools"));
        let quick = r.resolve(&uris(&["https://quick.example/mcp"])).unwrap();
        assert!(quick.check_scope(&scope("read")).is_ok());
        assert!(quick.check_scope(&scope("write")).is_err());
        let default = r.resolve(&[]).unwrap();
        assert!(default.check_scope(&scope("tools")).is_err());
    }

    #[test]
    fn client_credentials_by_kind() {
        let r = registry(FILE, true);
        let mcp = r.resolve(&uris(&["https://mcp.example.com"])).unwrap();
        assert!(
            mcp.check_client_credentials(ClientKind::InitialToken)
                .is_ok()
        );
        assert!(mcp.check_client_credentials(ClientKind::Dynamic).is_err());
        assert!(mcp.check_client_credentials(ClientKind::Agent).is_ok());
        assert!(
            mcp.check_client_credentials(ClientKind::OwnerAgent)
                .is_err(),
            "an agent made in the console is not vouched for"
        );
        assert!(
            mcp.check_client_credentials(ClientKind::MetadataDocument)
                .is_err()
        );
        let files = r
            .resolve(&uris(&["https://files.example.com/api"]))
            .unwrap();
        assert!(files.check_client_credentials(ClientKind::Agent).is_err());
        assert!(files.check_client_credentials(ClientKind::Operator).is_ok());
        let open = r.resolve(&uris(&["https://elsewhere.example/"])).unwrap();
        assert!(open.check_client_credentials(ClientKind::Dynamic).is_err());
    }

    #[test]
    fn scopes_supported_is_the_union() {
        let r = registry(FILE, false);
        assert_eq!(
            r.scopes_supported().unwrap(),
            scope("read tools prompts files:read")
        );
        let bare = ResourceRegistry::build(Sources {
            file: None,
            flags: &[],
            scopes: None,
            default_audience: "https://as.example",
            default_audience_set: true,
            open: false,
            issuer: None,
        })
        .unwrap();
        assert_eq!(bare.scopes_supported(), None);
    }

    /// A passport may name a resource only where its entry says so; the
    /// default audience is a resource too (SECURITY.md, "Passport used as
    /// an access token").
    #[test]
    fn passports_only_for_resources_that_accept_them() {
        let r = registry(
            &format!(
                "{FILE}\n[[resource]]\nuri = \"https://agents.example/api\"\naccept_passports = true\n"
            ),
            false,
        );
        let accepts = |uri: &str| r.passport_target(uri).map(|res| res.accept_passports);
        assert_eq!(accepts("https://AGENTS.example/api"), Some(true));
        assert_eq!(accepts("https://mcp.example.com/"), Some(false));
        assert_eq!(accepts("https://quick.example/mcp"), Some(false));
        assert_eq!(accepts("https://as.example"), Some(false));
        assert_eq!(accepts("https://as.example/"), Some(false));
        assert_eq!(accepts("https://site.example/"), None);
        assert_eq!(accepts("https://as.example/agents/agent-abc"), None);
    }

    #[test]
    fn bad_files_are_refused() {
        let build = |file: &str| {
            ResourceRegistry::build(Sources {
                file: Some(file),
                flags: &[],
                scopes: None,
                default_audience: "https://as.example",
                default_audience_set: true,
                open: false,
                issuer: None,
            })
        };
        assert!(build("[[resource]]\nuri = \"/relative\"").is_err());
        assert!(build("[[resource]]\nuri = \"https://a.example\"\nscopes = [\"a b\"]").is_err());
        assert!(build("[[resource]]\nuri = \"https://a.example\"\nfoo = 1").is_err());
        assert!(
            build("[[resource]]\nuri = \"https://a.example\"\n[[resource]]\nuri = \"https://A.example/\"")
                .is_err()
        );
        assert!(build("client_credentials = [\"root\"]").is_err());
    }
}
