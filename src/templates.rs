//! The HTML templates of the login, consent, account and error pages,
//! compiled into the binary (minijinja; `.html` names auto-escape).

use minijinja::Environment;

/// The templates, compiled into the binary.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
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
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "template does not compile");
        }
    }
    env
}
