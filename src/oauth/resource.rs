//! RFC 8707 resource indicators.

use url::Url;

/// Most `resource` values one request may name: each becomes an `aud`
/// entry, and the token must stay small enough for an HTTP header.
pub const MAX_RESOURCES: usize = 8;

/// An absolute URI without a fragment (RFC 8707 §2), kept as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceUri(String);

impl ResourceUri {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let url = Url::parse(text).map_err(|_| "resource must be an absolute URI")?;
        if url.fragment().is_some() || text.contains('#') {
            return Err("resource must not contain a fragment");
        }
        if url.cannot_be_a_base() && !url.scheme().starts_with("urn") {
            return Err("resource must be an absolute URI");
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_absolute_rejects_relative_and_fragment() {
        assert!(ResourceUri::parse("https://mcp.example.com/mcp").is_ok());
        assert!(ResourceUri::parse("urn:example:api").is_ok());
        assert!(ResourceUri::parse("/mcp").is_err());
        assert!(ResourceUri::parse("mcp.example.com").is_err());
        assert!(ResourceUri::parse("https://mcp.example.com/#x").is_err());
    }
}
