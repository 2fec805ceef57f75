//! TLS for both directions: rustls does the protocol; this module only moves its records over
//! a [`Conn`] with owned buffers, so TLS works the same on every runtime behind the seam.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::rt::Conn;

/// Plaintext handed to the caller per read, at most.
const READ_CHUNK: usize = 16 * 1024;

/// A TLS session over a byte stream.
pub struct TlsStream<C> {
    io: C,
    tls: rustls::Connection,
    /// Ciphertext read from `io`, not yet fed to rustls.
    cipher_in: BytesMut,
    /// Ciphertext produced by rustls, to write to `io`.
    cipher_out: BytesMut,
    /// `io` reached end of stream.
    eof: bool,
}

impl<C: Conn> TlsStream<C> {
    /// Runs the server side of a handshake.
    pub async fn accept(io: C, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Self::handshake(io, conn.into()).await
    }

    /// Runs the client side of a handshake toward `server_name`.
    pub async fn connect(
        io: C,
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(config, server_name).map_err(io::Error::other)?;
        Self::handshake(io, conn.into()).await
    }

    async fn handshake(io: C, tls: rustls::Connection) -> io::Result<Self> {
        let mut s = TlsStream { io, tls, cipher_in: BytesMut::new(), cipher_out: BytesMut::new(), eof: false };
        while s.tls.is_handshaking() {
            s.flush_tls().await?;
            if s.tls.is_handshaking() && s.tls.wants_read() {
                if s.eof {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the TLS handshake"));
                }
                s.read_tls().await?;
            }
        }
        s.flush_tls().await?;
        Ok(s)
    }

    /// The ALPN protocol agreed, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    /// Writes every pending TLS record, in one socket write.
    async fn flush_tls(&mut self) -> io::Result<()> {
        if !self.tls.wants_write() {
            return Ok(());
        }
        let mut w = std::mem::take(&mut self.cipher_out).writer();
        let mut res = Ok(0);
        while self.tls.wants_write() && res.is_ok() {
            res = self.tls.write_tls(&mut w);
        }
        self.cipher_out = w.into_inner();
        res?;
        let (res, mut buf) = self.io.write_all(std::mem::take(&mut self.cipher_out)).await;
        buf.clear();
        self.cipher_out = buf;
        res
    }

    /// Feeds buffered ciphertext to rustls while it wants more (it stops wanting once it holds
    /// plaintext for us: that is its back-pressure). Returns whether anything was consumed.
    async fn feed(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        while !self.cipher_in.is_empty() && self.tls.wants_read() {
            let mut reader = (&self.cipher_in[..]).reader();
            let n = self.tls.read_tls(&mut reader)?;
            self.cipher_in.advance(n);
            if let Err(e) = self.tls.process_new_packets() {
                // Tell the peer why (rustls queued an alert), then fail.
                let _ = self.flush_tls().await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if n == 0 {
                break;
            }
            progressed = true;
        }
        Ok(progressed)
    }

    /// Makes progress on the receive side: feeds buffered ciphertext, or reads more from the
    /// socket and feeds that.
    async fn read_tls(&mut self) -> io::Result<()> {
        if self.feed().await? {
            return Ok(());
        }
        if self.cipher_in.capacity() - self.cipher_in.len() < 4096 {
            self.cipher_in.reserve(READ_CHUNK + 512);
        }
        let (res, buf) = self.io.read(std::mem::take(&mut self.cipher_in)).await;
        self.cipher_in = buf;
        if res? == 0 {
            self.eof = true;
            // Lets rustls tell a clean close_notify from truncation.
            let _ = self.tls.read_tls(&mut io::empty());
            let _ = self.tls.process_new_packets();
            return Ok(());
        }
        self.feed().await.map(drop)
    }
}

impl<C: Conn> Conn for TlsStream<C> {
    async fn read(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        loop {
            let (pending, closed) = match self.tls.process_new_packets() {
                Ok(state) => (state.plaintext_bytes_to_read(), state.peer_has_closed()),
                Err(e) => return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf),
            };
            if pending > 0 || closed || self.eof {
                let start = buf.len();
                buf.resize(start + pending.clamp(1, READ_CHUNK), 0);
                let res = self.tls.reader().read(&mut buf[start..]);
                match res {
                    // 0 is a clean close_notify.
                    Ok(n) => {
                        buf.truncate(start + n);
                        return (Ok(n), buf);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(start),
                    // Truncation without close_notify is an error, not an end: a body framed
                    // "until close" must not pass for complete when an attacker or a crash cut it.
                    Err(e) => {
                        buf.truncate(start);
                        return (Err(e), buf);
                    }
                }
            }
            if self.eof && self.cipher_in.is_empty() {
                return (
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TLS peer closed without close_notify")),
                    buf,
                );
            }
            if let Err(e) = self.read_tls().await {
                return (Err(e), buf);
            }
            if let Err(e) = self.flush_tls().await {
                return (Err(e), buf);
            }
        }
    }

    async fn write_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        let res = self.write_plain(&buf).await;
        (res, buf)
    }

    async fn write_bytes(&mut self, buf: Bytes) -> io::Result<()> {
        self.write_plain(&buf).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.flush_tls().await?;
        self.io.shutdown().await
    }
}

impl<C: Conn> TlsStream<C> {
    async fn write_plain(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.tls.writer().write(data)?;
            data = &data[n..];
            self.flush_tls().await?;
            if n == 0 && !data.is_empty() {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read certificates from {path}: {source}")]
    Certs { path: String, source: rustls::pki_types::pem::Error },
    #[error("no certificate found in {0}")]
    NoCerts(String),
    #[error("cannot read a private key from {path}: {source}")]
    Key { path: String, source: rustls::pki_types::pem::Error },
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Certs { path: shown.clone(), source })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCerts(shown));
    }
    Ok(certs)
}

/// Builds the listener's TLS configuration from PEM files. Only HTTP/1.1 is offered by ALPN.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|source| TlsConfigError::Key { path: key.display().to_string(), source })?;
    let mut cfg = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Builds an upstream TLS configuration: Mozilla's roots (webpki-roots) plus an optional extra
/// CA bundle (corporate proxies, private providers). HTTP/1.1 is requested by ALPN.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert)?;
        }
    }
    let mut cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
