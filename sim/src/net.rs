//! The byte stream under the node's MQTT client on the host: a tokio TCP socket behind the
//! `embedded_io_async` traits, with writes gathered until `flush` (the MQTT client writes a
//! packet in pieces; one segment per packet keeps Nagle and delayed ACKs out of the way).

use embedded_io_async::{ErrorKind, ErrorType, Read, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The transport.
#[derive(Debug)]
pub struct Tcp {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Tcp {
    /// Connects to `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            pending: Vec::with_capacity(512),
        })
    }
}

impl ErrorType for Tcp {
    type Error = NetError;
}

impl Read for Tcp {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, NetError> {
        match self.stream.read(buf).await {
            // A closed stream is an error to MQTT, not an empty read.
            Ok(0) if !buf.is_empty() => Err(NetError(std::io::ErrorKind::UnexpectedEof)),
            r => r.map_err(|e| NetError(e.kind())),
        }
    }
}

impl Write for Tcp {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, NetError> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    async fn flush(&mut self) -> Result<(), NetError> {
        let r = self.stream.write_all(&self.pending).await;
        self.pending.clear();
        r.map_err(|e| NetError(e.kind()))
    }
}
