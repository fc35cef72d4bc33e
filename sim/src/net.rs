//! The byte stream under the node's MQTT client on the host: a tokio TCP socket, or TLS
//! over it (what a board's modem does for a blob with a TLS transport), behind the
//! `embedded_io_async` traits, with writes gathered until `flush` (the MQTT client writes a
//! packet in pieces; one segment per packet keeps Nagle and delayed ACKs out of the way).

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A socket error, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetError(pub std::io::ErrorKind);

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socket: {}", self.0)
    }
}

impl std::error::Error for NetError {}

impl embedded_io_async::Error for NetError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// The CA a TLS blob's broker must chain to (`vigie-sim --ca`), with the SHA-256 blobs pin.
#[derive(Clone)]
pub struct TrustedCa {
    config: Arc<rustls::ClientConfig>,
    /// SHA-256 of the CA certificate (DER), as `devices add --broker-ca` pins it.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for TrustedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedCa").finish_non_exhaustive()
    }
}

impl TrustedCa {
    /// The first certificate of a PEM file.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let cert = rustls_pemfile::certs(&mut &pem[..])
            .next()
            .ok_or("no PEM certificate")?
            .map_err(|e| e.to_string())?;
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &cert).as_ref());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).map_err(|e| e.to_string())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
            sha256,
        })
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The transport.
pub struct Link {
    stream: Box<dyn Stream>,
    pending: Vec<u8>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
}

impl Link {
    /// Connects to `addr`: plain TCP, or TLS verifying the broker as `host` against `ca`.
    pub async fn connect(
        addr: std::net::SocketAddr,
        tls: Option<(&TrustedCa, &str)>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some((ca, host)) => {
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let connector = tokio_rustls::TlsConnector::from(ca.config.clone());
                Box::new(connector.connect(name, tcp).await?)
            }
        };
        Ok(Self {
            stream,
            pending: Vec::with_capacity(512),
        })
    }
}

impl ErrorType for Link {
    type Error = NetError;
}

impl Read for Link {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        match self.stream.read(buf).await {
            // A closed stream is an error to MQTT, not an empty read.
            Ok(0) if !buf.is_empty() => Err(NetError(std::io::ErrorKind::UnexpectedEof)),
            r => r.map_err(|e| NetError(e.kind())),
        }
    }
}

impl Write for Link {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), NetError> {
        let mut r = self.stream.write_all(&self.pending).await;
        if r.is_ok() {
            // TLS holds what it encrypts until flushed.
            r = self.stream.flush().await;
        }
        self.pending.clear();
        r.map_err(|e| NetError(e.kind()))
    }
}
