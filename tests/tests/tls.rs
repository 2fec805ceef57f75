//! TLS on both sides: an HTTPS listener, an HTTPS upstream trusted through a custom CA bundle,
//! a refused upstream certificate, and egress through an HTTP CONNECT proxy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bench_harness::mock::{MockOptions, MockServer};
use e2e::tls::test_pki;
use e2e::{Client, config_for, default_mock, gateway, on_both_drivers};

on_both_drivers!(
    tls_listener_serves_https,
    tls_upstream_with_custom_ca,
    tls_upstream_with_unknown_ca_is_refused,
    egress_goes_through_a_connect_proxy,
    provider_tokens_are_minted_through_the_egress_proxy,
);

const CHAT: &str = r#"{"model":"m","messages":[]}"#;

fn https_get(addr: SocketAddr, ca: &std::path::Path, request: &str) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
    tls.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn tls_listener_serves_https(driver: e2e::Runtime) {
    let pki = test_pki();
    let upstream = default_mock();
    let extra = format!("server:\n  tls: {{cert: {}, key: {}}}\n", pki.server_cert.display(), pki.server_key.display());
    let gw = gateway(&config_for(upstream.addr(), &extra), driver);
    let out = https_get(
        gw.local_addr(),
        &pki.ca_cert,
        "GET /health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{CHAT}",
        CHAT.len()
    );
    let out = https_get(gw.local_addr(), &pki.ca_cert, &req);
    assert!(out.starts_with("HTTP/1.1 200 OK") && out.contains("chat.completion"), "{out}");
    // Plain HTTP on the TLS port fails the handshake, and the shard carries on.
    let mut plain = Client::connect(gw.local_addr());
    plain.send(b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n");
    assert!(!String::from_utf8_lossy(&plain.read_to_close()).contains("200 OK"));
    assert!(
        https_get(gw.local_addr(), &pki.ca_cert, "GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .contains("200 OK")
    );
}

fn tls_mock(pki: &e2e::tls::TestPki) -> MockServer {
    let tls = engine::tls::server_config(&pki.server_cert, &pki.server_key).unwrap();
    MockServer::start(MockOptions { tls: Some(tls), ..MockOptions::for_tests() }).unwrap()
}

fn tls_upstream_with_custom_ca(driver: e2e::Runtime) {
    let pki = test_pki();
    let upstream = tls_mock(&pki);
    let yaml = format!(
        "providers:\n  up:\n    kind: openai-compatible\n    base_url: https://localhost:{}/v1\n    tls: {{ca_bundle: {}}}\nmodels:\n  m: {{target: up/x}}\n",
        upstream.addr().port(),
        pki.ca_cert.display()
    );
    let gw = gateway(&yaml, driver);
    let mut c = Client::connect(gw.local_addr());
    for _ in 0..3 {
        let r = c.post_json("/v1/chat/completions", CHAT, "");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let stream = c.post_json("/v1/chat/completions", r#"{"model":"m","stream":true,"messages":[]}"#, "");
    assert!(stream.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(upstream.stats().connections_accepted.load(Ordering::SeqCst), 1, "TLS connections are pooled too");
}

fn tls_upstream_with_unknown_ca_is_refused(driver: e2e::Runtime) {
    let pki = test_pki();
    let upstream = tls_mock(&pki);
    let yaml = format!(
        "providers:\n  up:\n    kind: openai-compatible\n    base_url: https://localhost:{}/v1\nmodels:\n  m: {{target: up/x}}\n",
        upstream.addr().port()
    );
    let gw = gateway(&yaml, driver);
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", CHAT, "");
    assert_eq!(r.status, 502);
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("TLS handshake"), "{msg}");
}

/// A minimal HTTP CONNECT proxy: counts tunnels and splices bytes both ways.
fn connect_proxy() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tunnels = Arc::new(AtomicUsize::new(0));
    let count = tunnels.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
                assert!(head.starts_with("CONNECT "), "{head}");
                let Ok(upstream) = TcpStream::connect(&target) else { return };
                count.fetch_add(1, Ordering::SeqCst);
                client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").unwrap();
                let (mut a, mut b) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let (mut c2, mut u2) = (client, upstream);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut b, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (addr, tunnels)
}

fn egress_goes_through_a_connect_proxy(driver: e2e::Runtime) {
    let upstream = default_mock();
    let (proxy, tunnels) = connect_proxy();
    let extra = format!("server:\n  egress: {{proxy: 'http://user:pw@{proxy}'}}\n");
    let gw = gateway(&config_for(upstream.addr(), &extra), driver);
    let mut c = Client::connect(gw.local_addr());
    for _ in 0..3 {
        assert_eq!(c.post_json("/v1/chat/completions", CHAT, "").status, 200);
    }
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "one tunnel, reused");
}

fn provider_tokens_are_minted_through_the_egress_proxy(driver: e2e::Runtime) {
    let upstream = default_mock();
    let (proxy, tunnels) = connect_proxy();
    let up = upstream.addr();
    let yaml = format!(
        "server:
  egress: {{proxy: 'http://{proxy}'}}
providers:
  entra:
    kind: azure
    base_url: 'http://{up}'
    azure: {{entra: {{tenant_id: contoso, client_id: app-1, client_secret: s3cret, authority: 'http://{up}'}}}}
models:
  e: {{target: entra/my-gpt4o}}
"
    );
    let gw = gateway(&yaml, driver);
    // The token was minted before the gateway served: through a tunnel of its own.
    assert_eq!(tunnels.load(Ordering::SeqCst), 1, "the token request went through the proxy");
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", r#"{"model":"e","messages":[]}"#, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(tunnels.load(Ordering::SeqCst), 2, "then the request itself");
}
