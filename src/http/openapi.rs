//! `GET /openapi.json`: an OpenAPI 3.1 description of every endpoint,
//! for API tooling and for schemathesis (conformance/test/schema.test.mjs),
//! which fuzzes the live server against it.
//!
//! The document is written by hand (`openapi.json` beside this file)
//! rather than derived from the handlers with utoipa: the OAuth endpoints
//! take forms whose valid fields depend on `grant_type`, errors share one
//! shape, and the pages are HTML, so annotations would restate the same
//! few schemas on fifty handlers. The test below keeps it honest: every
//! route in `router.rs` must be in the document, and nothing else.

use axum::body::Bytes;
use serde_json::{Value, json};

const SOURCE: &str = include_str!("openapi.json");

/// The document as served: `servers` is the issuer's origin, the
/// path-inserted metadata locations of an issuer with a path are added,
/// and `/metrics` is left out when it has a listener of its own.
pub fn document(issuer: &str, metadata_paths: &[String], metrics_here: bool) -> Bytes {
    let Ok(mut doc) = serde_json::from_str::<Value>(SOURCE) else {
        // Unreachable: the unit test parses the same constant.
        return Bytes::from_static(SOURCE.as_bytes());
    };
    let origin = url::Url::parse(issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|_| issuer.to_string());
    doc["servers"] = json!([{ "url": origin }]);
    if let Some(paths) = doc["paths"].as_object_mut() {
        let metadata = paths
            .get("/.well-known/oauth-authorization-server")
            .cloned();
        if let Some(metadata) = metadata {
            for (i, path) in metadata_paths.iter().enumerate() {
                if !paths.contains_key(path) {
                    let mut item = metadata.clone();
                    item["get"]["operationId"] = json!(format!("getMetadata{i}"));
                    paths.insert(path.clone(), item);
                }
            }
        }
        // SSF 1.0 §7.2: the configuration's path-inserted form too.
        let ssf = paths.get("/.well-known/ssf-configuration").cloned();
        let issuer_path = url::Url::parse(issuer)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        if let Some(mut ssf) = ssf
            && !issuer_path.is_empty()
        {
            ssf["get"]["operationId"] = json!("getSsfConfigurationWithPath");
            paths.insert(format!("/.well-known/ssf-configuration{issuer_path}"), ssf);
        }
        if !metrics_here {
            paths.remove("/metrics");
        }
    }
    Bytes::from(doc.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The paths `router.rs` routes, read from its source.
    fn routed() -> BTreeSet<String> {
        let source = include_str!("../router.rs");
        let mut paths = BTreeSet::new();
        for piece in source.split(".route(").skip(1) {
            let piece = piece.trim_start();
            if let Some(rest) = piece.strip_prefix('"')
                && let Some(end) = rest.find('"')
            {
                paths.insert(rest[..end].to_string());
            }
        }
        paths
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc: Value = serde_json::from_str(SOURCE).expect("openapi.json parses");
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let mut routed = routed();
        // Routed in a loop over `metadata_paths`, not by literal.
        routed.insert("/.well-known/oauth-authorization-server".into());
        routed.insert("/.well-known/openid-configuration".into());
        assert!(routed.len() > 40, "{routed:?}");
        assert_eq!(
            routed.difference(&documented).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "routes missing from openapi.json"
        );
        assert_eq!(
            documented.difference(&routed).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "openapi.json documents paths nobody routes"
        );
        // Every operation has an id and responses.
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                if method == "parameters" {
                    continue;
                }
                assert!(op["operationId"].is_string(), "{method} {path}");
                assert!(op["responses"].is_object(), "{method} {path}");
            }
        }
    }

    #[test]
    fn served_document_names_the_issuer_origin_and_path_forms() {
        let paths = vec![
            "/.well-known/oauth-authorization-server".to_string(),
            "/.well-known/oauth-authorization-server/tenant".to_string(),
        ];
        let doc: Value =
            serde_json::from_slice(&document("https://as.example.com/tenant", &paths, false))
                .expect("json");
        assert_eq!(doc["servers"][0]["url"], "https://as.example.com");
        assert!(doc["paths"]["/.well-known/oauth-authorization-server/tenant"].is_object());
        assert!(doc["paths"]["/metrics"].is_null());
    }
}
