//! An owner's browser, by hand, for the benchmark tools that act as one:
//! a cookie jar, form bodies, hidden fields, and signing in.

#![allow(dead_code)]

use std::collections::HashMap;

/// A browser's cookie jar (name → value).
#[derive(Default)]
pub struct Jar(HashMap<String, String>);

impl Jar {
    pub fn take(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            let pair = v.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.0.insert(name.trim().into(), value.trim().into());
            }
        }
    }

    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The value of the hidden field `name` in a page.
pub fn hidden(html: &str, name: &str) -> anyhow::Result<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .ok_or_else(|| anyhow::anyhow!("no hidden field {name}"))?
        + marker.len();
    Ok(html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_string())
}

/// A client that does not follow redirects (a sign-in's cookie comes with
/// its 303), signed in as `username`: the client and its jar.
pub async fn signed_in(
    issuer: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<(reqwest::Client, Jar)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut jar = Jar::default();
    let page = http.get(format!("{issuer}/login")).send().await?;
    jar.take(&page);
    let csrf = hidden(&page.text().await?, "csrf_token")?;
    let login = http
        .post(format!("{issuer}/login"))
        .header("cookie", jar.header())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("csrf_token", csrf.as_str()),
            ("username", username),
            ("password", password),
            ("return_to", "/account"),
        ]))
        .send()
        .await?;
    anyhow::ensure!(login.status() == 303, "sign-in: {}", login.status());
    jar.take(&login);
    Ok((http, jar))
}
