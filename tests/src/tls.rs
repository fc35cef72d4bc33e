//! A test certificate authority and a server certificate for 127.0.0.1 and `localhost`, as
//! PEM files, for servers the tests run over TLS: made by the product's own CA code
//! (`gateway::fleet::pki`, what `broker-cert` runs).

use std::path::{Path, PathBuf};

/// PEM files in a test directory.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server's certificate (for `127.0.0.1` and `localhost`), signed by the CA.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

/// Generates a fresh CA and server certificate in `dir`.
pub fn pki(dir: &Path) -> TestPki {
    let files = gateway::fleet::pki::CaFiles::in_dir(dir);
    let (ca, _) = gateway::fleet::pki::load_or_create_ca(&files).unwrap();
    let issued =
        gateway::fleet::pki::issue_server(&ca, &["localhost".into(), "127.0.0.1".into()]).unwrap();
    let out = TestPki {
        ca: files.cert,
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    std::fs::write(&out.cert, issued.cert_pem).unwrap();
    std::fs::write(&out.key, issued.key_pem).unwrap();
    out
}
