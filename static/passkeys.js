// Passkey ceremonies for agentauth's pages (WebAuthn). The only script
// the pages load; everything else works without JavaScript. A page opts in
// with an element `[data-passkey="login"|"register"|"approve"]` holding
// the CSRF token (and, for login, the page to return to; for approve, the
// request); it stays hidden in browsers without WebAuthn. The approvals
// page also opts in to live updates with `[data-approvals-live]`.
(function () {
  "use strict";

  function enc(buffer) {
    const bytes = new Uint8Array(buffer);
    let s = "";
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function dec(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const s = atob(b64 + "===".slice((b64.length + 3) % 4));
    return Uint8Array.from(s, (c) => c.charCodeAt(0)).buffer;
  }

  async function post(url, fields) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      body: new URLSearchParams(fields),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok && body.redirect) {
      // A stale sign-in: the login page, then back here.
      location.assign(body.redirect);
      return new Promise(() => {});
    }
    if (!response.ok) {
      throw new Error(body.error_description || "The request was refused.");
    }
    return body;
  }

  async function register(root) {
    const csrf = root.dataset.csrf;
    const name = root.querySelector("input[name=name]");
    const { publicKey } = await post("/passkeys/register/options", { csrf_token: csrf });
    publicKey.challenge = dec(publicKey.challenge);
    publicKey.user.id = dec(publicKey.user.id);
    for (const c of publicKey.excludeCredentials) c.id = dec(c.id);
    const credential = await navigator.credentials.create({ publicKey });
    const done = await post("/passkeys/register", {
      csrf_token: csrf,
      name: name ? name.value : "",
      client_data_json: enc(credential.response.clientDataJSON),
      attestation_object: enc(credential.response.attestationObject),
    });
    location.assign(done.redirect);
  }

  async function login(root) {
    const csrf = root.dataset.csrf;
    const { publicKey } = await post("/passkeys/login/options", { csrf_token: csrf });
    publicKey.challenge = dec(publicKey.challenge);
    for (const c of publicKey.allowCredentials) c.id = dec(c.id);
    const credential = await navigator.credentials.get({ publicKey });
    const r = credential.response;
    const done = await post("/passkeys/login", {
      csrf_token: csrf,
      return_to: root.dataset.returnTo || "/account",
      credential_id: enc(credential.rawId),
      client_data_json: enc(r.clientDataJSON),
      authenticator_data: enc(r.authenticatorData),
      signature: enc(r.signature),
      user_handle: r.userHandle ? enc(r.userHandle) : "",
    });
    location.assign(done.redirect);
  }

  // Approving one backchannel request: an assertion whose challenge the
  // server bound to that request.
  async function approve(root) {
    const csrf = root.dataset.csrf;
    const base = "/account/approvals/" + encodeURIComponent(root.dataset.request);
    const { publicKey } = await post(base + "/options", { csrf_token: csrf });
    publicKey.challenge = dec(publicKey.challenge);
    for (const c of publicKey.allowCredentials) c.id = dec(c.id);
    const credential = await navigator.credentials.get({ publicKey });
    const r = credential.response;
    const done = await post(base + "/approve", {
      csrf_token: csrf,
      credential_id: enc(credential.rawId),
      client_data_json: enc(r.clientDataJSON),
      authenticator_data: enc(r.authenticatorData),
      signature: enc(r.signature),
      user_handle: r.userHandle ? enc(r.userHandle) : "",
    });
    location.assign(done.redirect);
  }

  // The approvals page: the server says which requests are pending; when
  // that is not what the page shows, the page reloads (or, while the
  // owner is in the middle of answering, says that the list changed).
  function live(root) {
    if (!window.EventSource) return;
    const shown = root.dataset.approvalsLive;
    const notice = root.querySelector("[role=status]");
    const source = new EventSource("/account/approvals/events");
    source.addEventListener("pending", (event) => {
      if (event.data === shown) return;
      const busy = busyCeremony || [...document.querySelectorAll("input[type=password]")].some((i) => i.value);
      if (busy) {
        root.hidden = false;
        notice.hidden = false;
      } else {
        source.close();
        location.reload();
      }
    });
  }

  let busyCeremony = false;

  function start() {
    for (const root of document.querySelectorAll("[data-approvals-live]")) live(root);
    if (!window.PublicKeyCredential || !navigator.credentials) return;
    for (const root of document.querySelectorAll("[data-passkey]")) {
      const button = root.querySelector("button");
      const error = root.querySelector("[role=alert]");
      const ceremony = { register, login, approve }[root.dataset.passkey] || login;
      root.hidden = false;
      button.addEventListener("click", async (event) => {
        event.preventDefault();
        button.disabled = true;
        error.hidden = true;
        busyCeremony = true;
        try {
          await ceremony(root);
        } catch (e) {
          busyCeremony = false;
          error.textContent =
            e && e.name === "NotAllowedError"
              ? "No passkey was used (cancelled, timed out, or none for this site)."
              : (e && e.message) || "Something went wrong.";
          error.hidden = false;
          button.disabled = false;
        }
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
