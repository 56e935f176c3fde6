//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document,
//! as the MCP authorization spec uses them): a client_id that is an https
//! URL names a JSON document of client metadata that the client hosts.

use url::Url;

use super::client_metadata::{
    AuthMethod, ClientMetadata, ClientMetadataRequest, RegistrationPolicy,
};

/// Whether a client_id is meant as a metadata document URL.
pub fn is_document_url(client_id: &str, insecure: bool) -> bool {
    client_id.starts_with("https://") || (insecure && client_id.starts_with("http://"))
}

/// §3: an https URL with a path, no fragment, no userinfo, no dot segments.
pub fn check_url(client_id: &str, insecure: bool) -> Result<(), &'static str> {
    let url = Url::parse(client_id).map_err(|_| "client_id is not a URL")?;
    let scheme_ok = url.scheme() == "https" || (insecure && url.scheme() == "http");
    if !scheme_ok {
        return Err("client_id URL must be https");
    }
    if client_id.contains('#') || !url.username().is_empty() || url.password().is_some() {
        return Err("client_id URL must not have a fragment or userinfo");
    }
    let lower = client_id.to_ascii_lowercase();
    if lower.contains("/./")
        || lower.contains("/../")
        || lower.ends_with("/..")
        || lower.ends_with("/.")
        || lower.contains("%2e")
    {
        return Err("client_id URL must not contain dot segments");
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err("client_id URL must have a path");
    }
    Ok(())
}

/// §4: the document's `client_id` must equal the URL it was fetched from,
/// byte for byte; shared-secret methods are impossible for such clients.
pub fn parse_document(
    client_id: &str,
    body: &[u8],
    policy: &RegistrationPolicy<'_>,
) -> Result<ClientMetadata, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("document is not JSON: {e}"))?;
    if value.get("client_id").and_then(|v| v.as_str()) != Some(client_id) {
        return Err("document client_id does not equal its URL".into());
    }
    let mut request: ClientMetadataRequest =
        serde_json::from_value(value).map_err(|e| format!("invalid metadata: {e}"))?;
    let others = request.token_endpoint_auth_methods_supported.take();
    if request.token_endpoint_auth_method.is_none() {
        // The RFC 7591 default (client_secret_basic) cannot apply here: a
        // document that names keys authenticates with them (ChatGPT's
        // omit the method), one without keys is a public client.
        let has_keys = request.jwks_uri.is_some() || request.jwks.is_some();
        request.token_endpoint_auth_method = Some(
            match has_keys {
                true => "private_key_jwt",
                false => "none",
            }
            .into(),
        );
    }
    let mut metadata = finish(request, policy)?;
    // Other declared methods: accepted as long as they need no shared
    // secret and, for private_key_jwt, the document names its keys.
    for name in others.unwrap_or_default() {
        let method = AuthMethod::parse(&name)
            .ok_or_else(|| format!("token_endpoint_auth_methods_supported: unknown {name:?}"))?;
        if method.uses_secret() {
            continue;
        }
        if method == AuthMethod::PrivateKeyJwt && !names_keys(&metadata) {
            return Err("private_key_jwt needs jwks_uri or jwks in the document".into());
        }
        if !metadata.accepts_auth_method(method) {
            metadata.other_auth_methods.push(method);
        }
    }
    Ok(metadata)
}

fn finish(
    request: ClientMetadataRequest,
    policy: &RegistrationPolicy<'_>,
) -> Result<ClientMetadata, String> {
    let metadata = ClientMetadata::validate(request, policy)
        .map_err(|e| e.description.unwrap_or_default().into_owned())?;
    if metadata.token_endpoint_auth_method.uses_secret() {
        return Err("a metadata-document client cannot use a client secret".into());
    }
    if metadata.token_endpoint_auth_method == AuthMethod::PrivateKeyJwt && !names_keys(&metadata) {
        return Err(
            "a metadata-document client using private_key_jwt must name its keys (jwks_uri or jwks)"
                .into(),
        );
    }
    Ok(metadata)
}

/// Keys published in the document itself are as authentic as the
/// document (fetched over https from the client's own URL).
fn names_keys(metadata: &ClientMetadata) -> bool {
    metadata.jwks_uri.is_some() || metadata.jwks.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules() {
        assert!(check_url("https://app.example.com/oauth/client.json", false).is_ok());
        for bad in [
            "http://app.example.com/client.json",
            "https://app.example.com/client.json#x",
            "https://user@app.example.com/client.json",
            "https://app.example.com/a/../client.json",
            "https://app.example.com",
            "https://app.example.com/",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
    }
}
