//! Form bodies (application/x-www-form-urlencoded) as every OAuth endpoint
//! parses them: never a panic, whatever the bytes.
#![no_main]

use agentauth::oauth::form::OAuthForm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(form) = OAuthForm::parse(data) else {
        return;
    };
    for name in ["grant_type", "code", "scope", "resource", "client_id", ""] {
        let _ = form.get(name);
        let _ = form.get_all(name).count();
        let _ = form.require(name);
    }
});
