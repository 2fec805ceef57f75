//! shardgate's benchmark harness. This first slice holds the mock provider: an OpenAI-dialect
//! server with knobs for latency, time to first token, token rate, answer size and faults, usable
//! as its own binary (`shardgate-mock`) or in-process by tests.

pub mod bench;
pub mod mock;
pub mod mock_mcp;
