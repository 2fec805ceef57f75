//! The MCP audit trail: one record per tool call, appended to a hash-chained table. Each row
//! stores the record as canonical JSON, the hash of the row before it, and its own hash,
//! SHA-256 over both; the database refuses updates and deletes (triggers), and
//! [`verify`] finds the first row whose record, columns or link no longer agree, so an edit
//! made behind the gateway's back (the triggers dropped, the file rewritten) is detected.
//! The chain's head hash, printed by `shardgate audit verify`, can be kept elsewhere to
//! detect a rewrite of the whole tail.

use ring::digest::{SHA256, digest};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One policy or guardrail decision taken on a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// `access`, `rate_limit` or `guardrail`.
    pub kind: String,
    /// The rule (an access rule's config path, a guardrail's id).
    pub rule: String,
    /// `allowed`, `denied`, or a guardrail's outcome (`blocked`, `redacted`, `flagged`, ...).
    pub verdict: String,
    /// A guardrail's phase (`tool_args`, `tool_result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// One tool call. Field order is the canonical JSON's (the hash covers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at_ms: u64,
    pub key: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub application: Option<String>,
    pub environment: Option<String>,
    pub virtual_server: String,
    /// The upstream server, when the name resolved to one.
    pub server: Option<String>,
    /// The tool as the caller named it (`server__tool`).
    pub tool: String,
    /// SHA-256 (hex) of the arguments as the caller sent them (compact JSON).
    pub arguments_sha256: String,
    /// The arguments as sent upstream (after the guardrails), when the virtual server keeps them.
    pub arguments: Option<String>,
    /// `ok`, `tool_error` (the tool answered with an error), `upstream_error`, `forbidden`,
    /// `unknown_tool`, `guardrail_blocked`, `rate_limited`, `client_closed` (the tool answered;
    /// the client left before it had all of it), `invalid`.
    pub outcome: String,
    pub latency_us: u64,
    pub decisions: Vec<Decision>,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    digest(&SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical text of a record (what is stored and hashed).
pub fn canonical(r: &AuditRecord) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// A row's hash: SHA-256 over the previous hash, a newline, and the canonical record.
pub fn chain_hash(prev: &str, canonical: &str) -> String {
    let mut bytes = Vec::with_capacity(prev.len() + 1 + canonical.len());
    bytes.extend_from_slice(prev.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(canonical.as_bytes());
    sha256_hex(&bytes)
}

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    key TEXT,
    user TEXT,
    team TEXT,
    application TEXT,
    environment TEXT,
    virtual_server TEXT NOT NULL,
    server TEXT,
    tool TEXT NOT NULL,
    outcome TEXT NOT NULL,
    record TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at_ms);
CREATE TRIGGER IF NOT EXISTS audit_append_only_u BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_d BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
";

/// Appends records (in one transaction the caller opened), chained to the last row.
pub fn append(conn: &Connection, records: &[AuditRecord]) -> rusqlite::Result<()> {
    let mut prev: String = conn
        .query_row("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| GENESIS.to_owned());
    let mut stmt = conn.prepare_cached(
        "INSERT INTO audit (at_ms, key, user, team, application, environment, virtual_server, server, tool,
                            outcome, record, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for r in records {
        let text = canonical(r);
        let hash = chain_hash(&prev, &text);
        stmt.execute(params![
            i64::try_from(r.at_ms).unwrap_or(i64::MAX),
            r.key,
            r.user,
            r.team,
            r.application,
            r.environment,
            r.virtual_server,
            r.server,
            r.tool,
            r.outcome,
            text,
            prev,
            hash,
        ])?;
        prev = hash;
    }
    Ok(())
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub records: u64,
    /// The last row's hash (the genesis value for an empty trail).
    pub head: String,
    /// The first row that does not hold, and why.
    pub broken: Option<(i64, String)>,
}

/// Walks the whole chain in order.
pub fn verify(conn: &Connection) -> rusqlite::Result<Verified> {
    let mut stmt = conn.prepare(
        "SELECT seq, at_ms, key, user, team, application, environment, virtual_server, server, tool, outcome,
                record, prev_hash, hash FROM audit ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS.to_owned();
    let mut records = 0u64;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let text: String = row.get(11)?;
        let (stored_prev, stored_hash): (String, String) = (row.get(12)?, row.get(13)?);
        let broken = |why: String| Verified { records, head: prev.clone(), broken: Some((seq, why)) };
        if stored_prev != prev {
            return Ok(broken("its prev_hash is not the hash of the record before it".into()));
        }
        if chain_hash(&prev, &text) != stored_hash {
            return Ok(broken("its record does not hash to its stored hash".into()));
        }
        let Ok(record) = serde_json::from_str::<AuditRecord>(&text) else {
            return Ok(broken("its record is not an audit record".into()));
        };
        let columns = (
            row.get::<_, i64>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, Option<String>>(4)?,
            row.get::<_, Option<String>>(5)?,
            row.get::<_, Option<String>>(6)?,
            row.get::<_, String>(7)?,
            row.get::<_, Option<String>>(8)?,
            row.get::<_, String>(9)?,
            row.get::<_, String>(10)?,
        );
        let expected = (
            i64::try_from(record.at_ms).unwrap_or(i64::MAX),
            record.key,
            record.user,
            record.team,
            record.application,
            record.environment,
            record.virtual_server,
            record.server,
            record.tool,
            record.outcome,
        );
        if columns != expected {
            return Ok(broken("its columns do not match its record".into()));
        }
        prev = stored_hash;
        records += 1;
    }
    Ok(Verified { records, head: prev, broken: None })
}

/// Filters of an audit query (all optional; `limit` newest records, at most 1000).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub key: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub application: Option<String>,
    pub virtual_server: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub limit: u32,
}

/// Records matching `q`, newest first, each with its `seq` and `hash`.
pub fn query(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<serde_json::Value>> {
    let mut sql = String::from("SELECT seq, record, hash FROM audit WHERE 1=1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let text_filters = [
        ("key", &q.key),
        ("user", &q.user),
        ("team", &q.team),
        ("application", &q.application),
        ("virtual_server", &q.virtual_server),
        ("server", &q.server),
        ("tool", &q.tool),
    ];
    for (column, value) in text_filters {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?{}", args.len() + 1));
            args.push(v.clone().into());
        }
    }
    for (op, value) in [(">=", q.from_ms), ("<", q.to_ms)] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND at_ms {op} ?{}", args.len() + 1));
            args.push(i64::try_from(v).unwrap_or(i64::MAX).into());
        }
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", q.limit.clamp(1, 1000)));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |row| {
        let (seq, text, hash): (i64, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("seq".into(), seq.into());
            o.insert("hash".into(), hash.into());
        }
        Ok(v)
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(tool: &str, at_ms: u64) -> AuditRecord {
        AuditRecord {
            at_ms,
            key: Some("k".into()),
            user: Some("u".into()),
            team: Some("t".into()),
            application: None,
            environment: None,
            virtual_server: "v".into(),
            server: Some("s".into()),
            tool: tool.into(),
            arguments_sha256: sha256_hex(b"{}"),
            arguments: None,
            outcome: "ok".into(),
            latency_us: 42,
            decisions: vec![Decision {
                kind: "access".into(),
                rule: "r".into(),
                verdict: "allowed".into(),
                phase: None,
            }],
        }
    }

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA).unwrap();
        c
    }

    #[test]
    fn the_chain_verifies_and_queries_filter() {
        let c = db();
        append(&c, &[record("s__a", 1), record("s__b", 2)]).unwrap();
        append(&c, &[record("s__a", 3)]).unwrap();
        let v = verify(&c).unwrap();
        assert_eq!((v.records, v.broken.clone()), (3, None));
        assert_ne!(v.head, GENESIS);
        let got = query(&c, &AuditQuery { tool: Some("s__a".into()), limit: 10, ..AuditQuery::default() }).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0]["at_ms"], 3, "newest first");
        let got =
            query(&c, &AuditQuery { from_ms: Some(2), to_ms: Some(3), limit: 10, ..AuditQuery::default() }).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(verify(&db()).unwrap(), Verified { records: 0, head: GENESIS.into(), broken: None });
    }

    #[test]
    fn edits_are_refused_and_tampering_is_found() {
        let c = db();
        append(&c, &[record("s__a", 1), record("s__b", 2), record("s__c", 3)]).unwrap();
        assert!(c.execute("UPDATE audit SET tool = 'x' WHERE seq = 2", []).is_err(), "append-only");
        assert!(c.execute("DELETE FROM audit WHERE seq = 2", []).is_err(), "append-only");
        c.execute_batch("DROP TRIGGER audit_append_only_u; DROP TRIGGER audit_append_only_d;").unwrap();
        // A column changed: found at that row.
        c.execute("UPDATE audit SET tool = 's__x' WHERE seq = 2", []).unwrap();
        let v = verify(&c).unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.0), Some(2), "{v:?}");
        assert!(v.broken.unwrap().1.contains("columns"));
        // The record itself changed: its hash no longer holds.
        c.execute("UPDATE audit SET tool = 's__b', record = replace(record, 's__b', 's__y') WHERE seq = 2", [])
            .unwrap();
        assert!(verify(&c).unwrap().broken.unwrap().1.contains("hash"));
        // A row deleted: the next one's link breaks.
        c.execute("UPDATE audit SET tool = 's__b', record = replace(record, 's__y', 's__b') WHERE seq = 2", [])
            .unwrap();
        assert_eq!(verify(&c).unwrap().broken, None, "restored");
        c.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let v = verify(&c).unwrap();
        assert_eq!(v.broken.as_ref().map(|b| b.0), Some(3));
        assert!(v.broken.unwrap().1.contains("prev_hash"));
    }
}
