//! A deliberately simple blocking HTTP/1.1 client for tests: raw bytes in, parsed responses out,
//! so tests control framing exactly (pipelining, broken requests, slow writes).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
    /// For chunked bodies: each chunk's payload, in order.
    pub chunks: Vec<Vec<u8>>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The OpenAI error object, checking the shape.
    pub fn error(&self) -> serde_json::Value {
        let v = self.json();
        let e = v.get("error").unwrap_or_else(|| panic!("no error object in {v}")).clone();
        for field in ["message", "type", "param", "code"] {
            assert!(e.get(field).is_some(), "error lacks {field}: {e}");
        }
        e
    }
}

/// One connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.stream.write_all(bytes).expect("write");
        self
    }

    /// Sends a request with a JSON body and reads the response.
    pub fn post_json(&mut self, path: &str, body: &str, extra_headers: &str) -> Response {
        self.send_post(path, body, extra_headers);
        self.read_response()
    }

    /// Sends a request with a JSON body without reading anything (streams, pipelining).
    pub fn send_post(&mut self, path: &str, body: &str, extra_headers: &str) -> &mut Self {
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes())
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.get_with(path, "")
    }

    /// A GET with extra header lines (each ending in `\r\n`).
    pub fn get_with(&mut self, path: &str, extra_headers: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: test\r\n{extra_headers}\r\n").as_bytes());
        self.read_response()
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16384];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return 0,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Reads bytes until the connection closes (or times out), returning them.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill() > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// True when the server has closed the connection (reads EOF or reset).
    pub fn is_closed(&mut self) -> bool {
        self.buf.is_empty() && self.fill() == 0
    }

    /// Reads one complete response (skipping `100 Continue`).
    pub fn read_response(&mut self) -> Response {
        loop {
            let resp = self.read_one();
            if resp.status != 100 {
                return resp;
            }
        }
    }

    /// Reads only the head of a response; the body stays unread (for streaming tests).
    pub fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(len) = r.parse(&self.buf).expect("valid response head") {
                let status = r.code.unwrap_or(0);
                let hs = r
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                    .collect();
                self.buf.drain(..len);
                return (status, hs);
            }
            assert!(
                self.fill() > 0,
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads the next chunk of a chunked body; `None` at the last chunk.
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let size_line = std::str::from_utf8(&self.buf[..pos]).expect("size line");
                let size =
                    usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16).expect("hex size");
                if size == 0 {
                    // Last chunk: consume through the final CRLF (no trailers from our server).
                    while self.buf.len() < pos + 4 {
                        assert!(self.fill() > 0, "closed inside the last chunk");
                    }
                    self.buf.drain(..pos + 4);
                    return None;
                }
                while self.buf.len() < pos + 2 + size + 2 {
                    assert!(self.fill() > 0, "closed inside a chunk");
                }
                let data = self.buf[pos + 2..pos + 2 + size].to_vec();
                assert_eq!(&self.buf[pos + 2 + size..pos + 4 + size], b"\r\n", "chunk not followed by CRLF");
                self.buf.drain(..pos + 4 + size);
                return Some(data);
            }
            assert!(self.fill() > 0, "closed before a chunk size line");
        }
    }

    fn read_one(&mut self) -> Response {
        let (status, headers) = self.read_head();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut chunks = Vec::new();
        let body = if status == 100 || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            while let Some(c) = self.read_chunk() {
                chunks.push(c);
            }
            chunks.concat()
        } else if let Some(len) = get("content-length") {
            let len: usize = len.trim().parse().expect("content-length");
            while self.buf.len() < len {
                assert!(self.fill() > 0, "closed inside a body");
            }
            self.buf.drain(..len).collect()
        } else {
            self.read_to_close()
        };
        Response { status, headers, body, chunks }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
