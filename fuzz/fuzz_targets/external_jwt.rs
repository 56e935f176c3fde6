//! External JWTs of the JWT bearer grant (RFC 7523 §2.1): workload tokens
//! and Identity Assertion JWTs, found by their unverified `iss` and `typ`,
//! verified against a fixed key set (a `jwks_file` issuer) and mapped by
//! the federation rules.
#![no_main]

use std::sync::OnceLock;

use agentauth::agents::federation::Federation;
use agentauth_fuzz::{ISSUER, NOW, fixed_key};
use libfuzzer_sys::fuzz_target;

fn federation() -> &'static Federation {
    static FEDERATION: OnceLock<Federation> = OnceLock::new();
    FEDERATION.get_or_init(|| {
        let keys = std::env::temp_dir().join(format!("agentauth-fuzz-{}.jwks", std::process::id()));
        let jwks = serde_json::json!({ "keys": [fixed_key().jwk] }).to_string();
        if std::fs::write(&keys, jwks).is_err() {
            std::process::abort()
        }
        let toml = format!(
            r#"
[[workload]]
issuer = "https://ci.example.com"
jwks_file = "{keys}"
algorithms = ["ES256"]
[[workload.rule]]
agent = "agent-1"
claims = {{ repository = "org/repo", ref = "refs/heads/main" }}

[[idp]]
issuer = "https://idp.example.com"
jwks_file = "{keys}"
"#,
            keys = keys.display()
        );
        match Federation::from_toml(&toml, ISSUER) {
            Ok(f) => f,
            Err(_) => std::process::abort(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(assertion) = std::str::from_utf8(data) else {
        return;
    };
    let _ = federation().verify_offline(assertion, NOW);
});
