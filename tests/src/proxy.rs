//! A TCP proxy on 127.0.0.1 that can lose answers: while `drop_answers` is on, what the
//! server sends back is thrown away and the client's connection closed, after the server
//! received (and acted on) the request. The fault of a server that dies between applying
//! a request and answering it, or of a network that loses the answer. While `refuse` is
//! on, it closes new connections at once and cuts the open ones: a server out of reach.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy (stops with the test's runtime).
#[derive(Debug, Clone)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    drop_answers: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl Proxy {
    /// Forwards connections on a free port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            drop_answers: Arc::default(),
            refuse: Arc::default(),
            dropped: Arc::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if p.refuse.load(Ordering::SeqCst) {
                    continue;
                }
                let p = p.clone();
                tokio::spawn(async move { p.serve(client, upstream).await });
            }
        });
        proxy
    }

    /// Loses answers from now on (`true`) or forwards them again.
    pub fn drop_answers(&self, on: bool) {
        self.drop_answers.store(on, Ordering::SeqCst);
    }

    /// Closes new connections at once and cuts the open ones from now on (`true`), or
    /// forwards them again.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
    }

    /// Answers lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }

    async fn serve(&self, client: TcpStream, upstream: SocketAddr) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let up = tokio::spawn(async move { tokio::io::copy(&mut client_rx, &mut server_tx).await });
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let read = tokio::time::timeout(
                std::time::Duration::from_millis(100),
                server_rx.read(&mut buf),
            );
            let n = match read.await {
                // Refusing: open connections are cut too (within 100 ms).
                Err(_) if self.refuse.load(Ordering::SeqCst) => break,
                Err(_) => continue,
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => n,
            };
            if self.drop_answers.load(Ordering::SeqCst) {
                self.dropped.fetch_add(1, Ordering::SeqCst);
                break;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        up.abort();
    }
}
