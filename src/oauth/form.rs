//! OAuth request parameters (RFC 6749 §3.1, §3.2; RFC 8707 §2), parsed
//! strictly from an `application/x-www-form-urlencoded` body. The HTTP
//! extractor that reads the body is in [`crate::http`].

use super::error::OAuthError;

/// An `application/x-www-form-urlencoded` body, parsed strictly: RFC 6749
/// §3.1 and §3.2 say parameters MUST NOT be included more than once (only
/// RFC 8707 `resource` and RFC 8693 §2.1 `audience` may repeat), and a
/// parameter sent without a value is treated as omitted.
#[derive(Debug, Default)]
pub struct OAuthForm {
    pairs: Vec<(String, String)>,
}

/// Parameters that may legitimately repeat.
const REPEATABLE: [&str; 2] = ["resource", "audience"];

impl OAuthForm {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            if !REPEATABLE.contains(&name.as_ref()) && pairs.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {name} is repeated"
                )));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn require(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_rejects_repeats_but_allows_resource() {
        assert_eq!(
            OAuthForm::parse(b"a=1&a=2").unwrap_err().error,
            "invalid_request"
        );
        let f =
            OAuthForm::parse(b"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&scope=").unwrap();
        assert_eq!(f.get_all("resource").count(), 2);
        let f = OAuthForm::parse(b"audience=a&audience=b").unwrap();
        assert_eq!(f.get_all("audience").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(f.get("scope"), None);
    }
}
