//! Requests the gateway makes of its own to a provider (health probes, guardrail checks): the
//! head, with the provider's headers (its credentials) and, for providers whose tokens the
//! gateway mints, the current one. Nothing of any client's request goes along.

use bytes::{BufMut, Bytes, BytesMut};

use crate::config::{Provider, Upstream};
use crate::shard::Shard;

/// `{method} {base path}{path}`; with `json_len`, a JSON body of that many bytes follows.
pub(super) fn head(
    shard: &Shard,
    provider: &Provider,
    up: &Upstream,
    method: &str,
    path: &str,
    json_len: Option<usize>,
) -> Bytes {
    let mut h = BytesMut::with_capacity(256);
    h.put_slice(method.as_bytes());
    h.put_u8(b' ');
    h.put_slice(up.base_path.trim_end_matches('/').as_bytes());
    h.put_slice(path.as_bytes());
    h.put_slice(b" HTTP/1.1\r\nhost: ");
    h.put_slice(up.host_header.as_bytes());
    h.put_slice(b"\r\n");
    if let Some(len) = json_len {
        h.put_slice(b"content-type: application/json\r\ncontent-length: ");
        h.put_slice(itoa::Buffer::new().format(len).as_bytes());
        h.put_slice(b"\r\n");
    }
    let minted = super::translate::minted_authorization(shard, provider).ok().flatten();
    for (n, v) in up.headers.iter().chain(minted.iter()) {
        h.put_slice(n.as_bytes());
        h.put_slice(b": ");
        h.put_slice(v.as_bytes());
        h.put_slice(b"\r\n");
    }
    h.put_slice(b"\r\n");
    h.freeze()
}
