//! Opening an upstream connection: TCP (every resolved address in turn), an optional HTTP
//! CONNECT tunnel through the egress proxy, then TLS when the target is HTTPS.

use std::io;
use std::net::{IpAddr, SocketAddr};

use arc_swap::ArcSwap;

use bytes::{BufMut, Bytes, BytesMut};

use super::dns::DnsTable;
use crate::config::Upstream;
use crate::http::upstream::ResponseHead;
use crate::rt::{Conn, TcpStream};
use crate::tls::TlsStream;

/// A connection to an upstream, plain or TLS.
pub enum UpstreamConn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn for UpstreamConn {
    async fn read(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match self {
            UpstreamConn::Plain(s) => s.read(buf).await,
            UpstreamConn::Tls(s) => s.read(buf).await,
        }
    }

    async fn write_all(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        match self {
            UpstreamConn::Plain(s) => s.write_all(buf).await,
            UpstreamConn::Tls(s) => s.write_all(buf).await,
        }
    }

    async fn write_bytes(&mut self, buf: Bytes) -> io::Result<()> {
        match self {
            UpstreamConn::Plain(s) => s.write_bytes(buf).await,
            UpstreamConn::Tls(s) => s.write_bytes(buf).await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            UpstreamConn::Plain(s) => s.shutdown().await,
            UpstreamConn::Tls(s) => s.shutdown().await,
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no address known for {0} (DNS resolution failed or has not completed)")]
    Dns(String),
    #[error("cannot connect to {addr}: {source}")]
    Tcp { addr: String, source: io::Error },
    #[error("egress proxy refused the tunnel to {target}: {detail}")]
    Proxy { target: String, detail: String },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls { host: String, source: io::Error },
}

/// Opens a new connection to `up` (no pool involved; the caller bounds the time).
pub async fn open(up: &Upstream, dns: &ArcSwap<DnsTable>) -> Result<UpstreamConn, ConnectError> {
    let (host, port) = up.dial_host();
    // Copied out so no table guard is held across the connect.
    let ips: Vec<IpAddr> = dns.load().lookup(host).ok_or_else(|| ConnectError::Dns(host.to_string()))?.to_vec();
    let mut last_err = None;
    let mut tcp = None;
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        match TcpStream::connect(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last_err = Some(ConnectError::Tcp { addr: addr.to_string(), source: e }),
        }
    }
    let Some(mut tcp) = tcp else {
        return Err(last_err.unwrap_or_else(|| ConnectError::Dns(host.to_string())));
    };
    // Small requests and SSE events must not wait for Nagle.
    let _ = tcp.set_nodelay(true);

    if let Some(proxy) = &up.proxy {
        tunnel(&mut tcp, up, proxy.authorization.as_deref()).await?;
    }
    match &up.tls {
        None => Ok(UpstreamConn::Plain(tcp)),
        Some(tls) => TlsStream::connect(tcp, tls.config.clone(), tls.server_name.clone())
            .await
            .map(|s| UpstreamConn::Tls(Box::new(s)))
            .map_err(|e| ConnectError::Tls { host: up.host.clone(), source: e }),
    }
}

/// Asks the proxy for a tunnel (`CONNECT host:port`) and checks it answered 2xx.
async fn tunnel(tcp: &mut TcpStream, up: &Upstream, authorization: Option<&str>) -> Result<(), ConnectError> {
    let target =
        if up.host.contains(':') { format!("[{}]:{}", up.host, up.port) } else { format!("{}:{}", up.host, up.port) };
    let fail = |detail: String| ConnectError::Proxy { target: target.clone(), detail };
    let mut req = BytesMut::with_capacity(256);
    req.put_slice(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").as_bytes());
    if let Some(auth) = authorization {
        req.put_slice(format!("Proxy-Authorization: {auth}\r\n").as_bytes());
    }
    req.put_slice(b"\r\n");
    let (res, _) = tcp.write_all(req).await;
    res.map_err(|e| fail(e.to_string()))?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let (res, b) = tcp.read(buf).await;
        buf = b;
        match res {
            Ok(0) => return Err(fail("the proxy closed the connection".into())),
            Ok(_) => {}
            Err(e) => return Err(fail(e.to_string())),
        }
        // A CONNECT response has no body; anything after the head belongs to the tunnel, and a
        // well-behaved proxy sends nothing before we speak.
        match ResponseHead::parse(&buf, true) {
            Ok(Some((head, len))) => {
                if !(200..300).contains(&head.status) {
                    return Err(fail(format!("status {}", head.status)));
                }
                if len != buf.len() {
                    return Err(fail("unexpected bytes after the proxy's answer".into()));
                }
                return Ok(());
            }
            Ok(None) if buf.len() < 16 * 1024 => {}
            Ok(None) => return Err(fail("answer too long".into())),
            Err(e) => return Err(fail(e.to_string())),
        }
    }
}
