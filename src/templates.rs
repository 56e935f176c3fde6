//! The HTML templates of the login, consent, account and error pages,
//! compiled into the binary (minijinja; `.html` names auto-escape).

use minijinja::Environment;

/// The templates, compiled into the binary.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A path segment or query value (client ids may be URLs).
    env.add_filter("urlencode", |value: String| {
        form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
    });
    // `.html` names turn on HTML auto-escaping.
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("consent.html", include_str!("../templates/consent.html")),
        ("error.html", include_str!("../templates/error.html")),
        ("account.html", include_str!("../templates/account.html")),
        ("signup.html", include_str!("../templates/signup.html")),
        ("agents.html", include_str!("../templates/agents.html")),
        ("agent.html", include_str!("../templates/agent.html")),
        ("confirm.html", include_str!("../templates/confirm.html")),
        (
            "agent_new.html",
            include_str!("../templates/agent_new.html"),
        ),
        ("admin.html", include_str!("../templates/admin.html")),
        ("passkeys.html", include_str!("../templates/passkeys.html")),
        (
            "approvals.html",
            include_str!("../templates/approvals.html"),
        ),
        (
            "page_error.html",
            include_str!("../templates/page_error.html"),
        ),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "template does not compile");
        }
    }
    env
}

#[cfg(test)]
mod tests {
    /// Every file in `templates/` is in the environment and compiles (a
    /// missing or broken one would otherwise show only as a 500 and a log
    /// line).
    #[test]
    fn every_template_is_loaded_and_compiles() {
        let built = super::environment();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Err(e) = built.get_template(&name) {
                panic!("{name}: {e:#}");
            }
            seen += 1;
        }
        assert!(seen >= 10, "templates found: {seen}");
    }
}
