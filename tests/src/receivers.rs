//! Receivers of the gateway's alerts: an SMTP server (Debian's `python3-aiosmtpd`,
//! STARTTLS and authentication required) and a webhook receiver that checks each call's
//! signature as docs/OPERATIONS.md tells a receiver to (Python's own `hmac`). Each writes
//! what it accepted into its directory; the tests read it back.

use crate::servers::{Server, addr, launch};
use std::path::{Path, PathBuf};

/// Debian's Python, which has Debian's `python3-aiosmtpd` (not a `python3` of another
/// installation earlier on `PATH`).
const PYTHON: &str = "/usr/bin/python3";

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("servers")
        .join(name)
        .display()
        .to_string()
}

/// The SMTP receiver: TLS with `pki`'s server certificate (STARTTLS), account `user` /
/// `password`.
pub fn smtp(pki: &crate::tls::TestPki, user: &str, password: &str) -> Server {
    launch(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mail");
        std::fs::create_dir(&out).unwrap();
        let a = addr();
        let args = [
            script("smtp_receiver.py"),
            format!("--port={}", a.port()),
            format!("--cert={}", pki.cert.display()),
            format!("--key={}", pki.key.display()),
            format!("--user={user}"),
            format!("--password={password}"),
            format!("--out={}", out.display()),
        ];
        Server::new("smtp", PYTHON, &args, dir, a)
    })
}

/// The webhook receiver, checking signatures with the key in `key_file`.
pub fn webhook(key_file: &Path) -> Server {
    launch(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("calls");
        std::fs::create_dir(&out).unwrap();
        let a = addr();
        let args = [
            script("webhook_receiver.py"),
            format!("--port={}", a.port()),
            format!("--key-file={}", key_file.display()),
            format!("--out={}", out.display()),
        ];
        Server::new("webhook", PYTHON, &args, dir, a)
    })
}

/// What a receiver accepted so far, oldest first: the e-mails (with an `X-Rcpt:` line
/// naming their recipients) or the webhook bodies.
pub fn received(server: &Server) -> Vec<String> {
    let dir = ["mail", "calls"]
        .iter()
        .map(|d| server.dir.path().join(d))
        .find(|d| d.is_dir())
        .expect("a receiver's directory");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("eml" | "json")))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Webhook calls the receiver refused for a bad signature.
pub fn rejected(server: &Server) -> usize {
    std::fs::read_to_string(server.dir.path().join("calls/rejected.txt"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Webhook calls telling `code` of `device` (empty: none) of `tenant` (empty: the
/// gateway) in `state` (`started`, `ended`), each with a text saying it.
pub fn told(hook: &Server, tenant: &str, code: &str, device: &str, state: &str) -> usize {
    received(hook)
        .iter()
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
        .flat_map(|v| v["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| {
            a["alert"] == code
                && a["state"] == state
                && a["tenant"].as_str().unwrap_or("") == tenant
                && a["device"].as_str().unwrap_or("") == device
                && a["text"].as_str().is_some_and(|t| !t.is_empty())
        })
        .count()
}

/// A webhook receiver for the gateway's operator (its key written to `dir/hook.key`) and
/// the `[alerts.operator]` section that sends to it.
pub fn operator_webhook(dir: &Path) -> (Server, String) {
    let key = dir.join("hook.key");
    std::fs::write(&key, "a-shared-key-of-32-bytes-000009\n").unwrap();
    let hook = webhook(&key);
    let toml = format!(
        "[alerts.operator]\nwebhooks = [{{ url = \"http://127.0.0.1:{}/op\", secret_file = \"{}\" }}]\n",
        hook.addr.port(),
        key.display()
    );
    (hook, toml)
}
