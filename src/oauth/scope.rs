//! RFC 6749 §3.3 scope values.

use std::fmt;

/// The authorization server's own scope (OpenID Connect Core §11; MCP
/// 2026-07-28, SEP-2207): the client asks that its access outlive the
/// session, by a refresh token. No resource offers it, and it is never
/// written into an access token's `scope`: it is about the grant, not
/// about what the token may do.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// A parsed, de-duplicated scope: a list of scope tokens in first-seen order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope(Vec<String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("scope token {0:?} has characters outside RFC 6749 §3.3 (NQCHAR)")]
pub struct ScopeError(pub String);

impl Scope {
    /// `scope = scope-token *( SP scope-token )`, `scope-token = 1*NQCHAR`.
    /// Runs of spaces are tolerated; empty input is the empty scope.
    pub fn parse(text: &str) -> Result<Self, ScopeError> {
        let mut tokens: Vec<String> = Vec::new();
        for token in text.split(' ').filter(|t| !t.is_empty()) {
            let nqchar = |c: char| matches!(c, '\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E');
            if !token.chars().all(nqchar) {
                return Err(ScopeError(token.to_string()));
            }
            if !tokens.iter().any(|t| t == token) {
                tokens.push(token.to_string());
            }
        }
        Ok(Self(tokens))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    pub fn is_subset_of(&self, other: &Scope) -> bool {
        self.0.iter().all(|t| other.contains(t))
    }

    /// Tokens of `self` that `other` lacks.
    pub fn missing_from<'a>(&'a self, other: &'a Scope) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(|t| !other.contains(t))
            .map(String::as_str)
    }

    /// Tokens of `self` that `other` also has, in `self`'s order.
    pub fn intersection(&self, other: &Scope) -> Scope {
        Self(
            self.0
                .iter()
                .filter(|t| other.contains(t))
                .cloned()
                .collect(),
        )
    }

    /// `self` without `token`.
    pub fn without(&self, token: &str) -> Scope {
        Self(self.0.iter().filter(|t| *t != token).cloned().collect())
    }

    /// `self`, then the tokens of `other` it lacks.
    pub fn union(&self, other: &Scope) -> Scope {
        let mut all = self.0.clone();
        all.extend(other.0.iter().filter(|t| !self.contains(t)).cloned());
        Self(all)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_dedupes() {
        let s = Scope::parse("read  write read").unwrap();
        assert_eq!(s.to_string(), "read write");
        assert!(Scope::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_non_nqchar() {
        assert!(Scope::parse("read \"x\"").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("caf\u{e9}").is_err());
    }

    #[test]
    fn subset() {
        let all = Scope::parse("a b c").unwrap();
        assert!(Scope::parse("a c").unwrap().is_subset_of(&all));
        assert!(!Scope::parse("a d").unwrap().is_subset_of(&all));
    }
}
