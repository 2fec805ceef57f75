//! No input panics a shard: thousands of malformed, truncated and mutated requests over real
//! sockets each get a refusal or a closed connection, and the gateway keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use e2e::{Client, config_for, default_mock, gateway, metric, on_both_drivers};

on_both_drivers!(garbage_never_panics_a_shard);

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SEEDS: [&[u8]; 6] = [
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 27\r\n\r\n{\"model\":\"m\",\"messages\":[]}",
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n1b\r\n{\"model\":\"m\",\"messages\":[]}\r\n0\r\n\r\n",
    b"GET /v1/models HTTP/1.1\r\nhost: t\r\n\r\n",
    b"POST /v1/embeddings HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\ncontent-length: 30\r\n\r\n{\"model\":\"mock\",\"input\":\"abc\"}",
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: t\r\ncontent-length: 50\r\n\r\n{\"model\":\"mock\",\"stream\":true,\"max_tokens\":\"x\"}",
    b"GET /v1/files/x HTTP/1.0\r\n\r\n",
];

const INTERESTING: [&[u8]; 12] =
    [b"\r\n", b"\n", b"\r", b"\0", b":", b" ", b"\xff", b"ffffffffffffffffffff", b"-1", b"chunked", b"\"", b"{"];

fn mutate(rng: &mut Rng) -> Vec<u8> {
    let mut v = SEEDS[rng.below(SEEDS.len())].to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 => v.truncate(at),
            1 if at < v.len() => v[at] = rng.next() as u8,
            2 => {
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(at..at, ins.iter().copied());
            }
            3 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            _ => {
                let n = rng.below(64);
                let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(at..at, junk);
            }
        }
    }
    v
}

fn garbage_never_panics_a_shard(driver: e2e::Runtime) {
    let upstream = default_mock();
    let limits = "server:\n  limits: {header_timeout: 300ms, body_timeout: 300ms, idle_timeout: 300ms}\n";
    let gw = gateway(&config_for(upstream.addr(), limits), driver);
    let mut rng = Rng(0x05ee_d0f5_ba7d_6a7e);
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..400 {
        let input = mutate(&mut rng);
        let mut s = TcpStream::connect(gw.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&input);
        let _ = s.shutdown(Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        if !out.is_empty() {
            let head = String::from_utf8_lossy(&out[..out.len().min(12)]).into_owned();
            assert!(head.starts_with("HTTP/1."), "case {case}: {input:?} -> {head:?}");
            *answered.entry(head[9..12.min(head.len())].to_string()).or_default() += 1;
        } else {
            *answered.entry("closed".into()).or_default() += 1;
        }
    }
    // The mutations must exercise more than one path: refusals, successes and silent closes.
    assert!(answered.len() >= 4, "too little variety: {answered:?}");
    let r = Client::connect(gw.local_addr()).post_json("/v1/chat/completions", r#"{"model":"m","messages":[]}"#, "");
    assert_eq!(r.status, 200, "still serving");
    assert_eq!(metric(&gw.metrics_text(), "shardgate_panics_total"), Some(0.0));
}
