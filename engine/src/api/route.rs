//! Where an admitted request goes: the provider chosen for it, reached from this shard with the
//! config in force. Handlers that call a provider take one [`Route`] instead of its parts.

use std::rc::Rc;

use crate::config::{Provider, Snapshot, Upstream};
use crate::http::Request;
use crate::shard::Shard;

#[derive(Clone, Copy)]
pub(super) struct Route<'a> {
    pub shard: &'a Rc<Shard>,
    pub cfg: &'a Snapshot,
    pub provider: &'a Provider,
    pub up: &'a Upstream,
    /// The model as the provider names it.
    pub upstream_model: &'a str,
    /// The client's request (its headers go upstream; its body is what is translated).
    pub req: &'a Request,
}
