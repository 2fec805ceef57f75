//! The `requests` table: the request log ([`crate::request_log`]) at rest, its retention, and
//! its queries.

use rusqlite::{Connection, OptionalExtension, params};

use crate::request_log::RequestRecord;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    key TEXT, user TEXT, team TEXT, application TEXT, environment TEXT,
    model TEXT, provider TEXT,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    error TEXT,
    input_tokens INTEGER, output_tokens INTEGER, cached_tokens INTEGER,
    cost_micros INTEGER,
    ttft_us INTEGER,
    latency_us INTEGER NOT NULL,
    overhead_us INTEGER
);
CREATE INDEX IF NOT EXISTS requests_at ON requests (at_ms);
CREATE INDEX IF NOT EXISTS requests_team_at ON requests (team, at_ms);
CREATE INDEX IF NOT EXISTS requests_key_at ON requests (key, at_ms);
";

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Writes `records` (in the caller's transaction).
pub fn append<'r>(conn: &Connection, records: impl IntoIterator<Item = &'r RequestRecord>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO requests (id, at_ms, endpoint, key, user, team, application, environment, model,
         provider, stream, status, error, input_tokens, output_tokens, cached_tokens, cost_micros, ttft_us,
         latency_us, overhead_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?;
    for r in records {
        let c = &r.caller;
        stmt.execute(params![
            r.id.as_str(),
            int(r.at_ms),
            r.endpoint,
            c.key.as_deref(),
            c.user.as_deref(),
            c.team.as_deref(),
            c.application.as_deref(),
            c.environment.as_deref(),
            r.model,
            r.provider.as_deref(),
            r.stream,
            r.status,
            r.error,
            r.input_tokens.map(int),
            r.output_tokens.map(int),
            r.cached_tokens.map(int),
            r.cost_micros.map(int),
            r.ttft_us.map(int),
            int(r.latency_us),
            r.overhead_us.map(int),
        ])?;
    }
    Ok(())
}

/// Rows deleted per statement when enforcing retention: short transactions, so the writer
/// never holds the database for long.
const PRUNE_STEP: usize = 5000;

/// Deletes one step of the records older than `before_ms`, or older than the newest
/// `max_rows` (found through the time index, not by counting the table); how many went (call
/// again while it is [`PRUNE_STEP`]).
pub fn prune_step(conn: &Connection, before_ms: u64, max_rows: Option<u64>) -> rusqlite::Result<usize> {
    let mut cutoff = int(before_ms);
    if let Some(max) = max_rows {
        // The time of the oldest record to keep, when there are more than `max`.
        let kept_from: Option<i64> = conn
            .query_row(
                "SELECT at_ms FROM requests ORDER BY at_ms DESC LIMIT 1 OFFSET ?1",
                params![int(max.saturating_sub(1))],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(t) = kept_from {
            cutoff = cutoff.max(t);
        }
    }
    conn.execute(
        "DELETE FROM requests WHERE rowid IN (SELECT rowid FROM requests WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
        params![cutoff, int(PRUNE_STEP as u64)],
    )
}

/// What `GET /admin/v1/requests` asks for.
#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    pub id: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub key: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub application: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<u16>,
    /// Team admins see their teams' requests only.
    pub teams: Option<Vec<String>>,
    pub limit: u32,
}

const COLUMNS: [&str; 20] = [
    "id",
    "at_ms",
    "endpoint",
    "key",
    "user",
    "team",
    "application",
    "environment",
    "model",
    "provider",
    "stream",
    "status",
    "error",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_micros",
    "ttft_us",
    "latency_us",
    "overhead_us",
];

/// The records matching `q`, newest first, as JSON objects (empty fields left out).
pub fn query(conn: &Connection, q: &RequestQuery) -> rusqlite::Result<Vec<serde_json::Value>> {
    let mut sql = format!("SELECT {} FROM requests WHERE 1=1", COLUMNS.join(", "));
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut text = |column: &str, v: &Option<String>, sql: &mut String| {
        if let Some(v) = v {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    };
    text("id", &q.id, &mut sql);
    text("key", &q.key, &mut sql);
    text("user", &q.user, &mut sql);
    text("team", &q.team, &mut sql);
    text("application", &q.application, &mut sql);
    text("model", &q.model, &mut sql);
    text("provider", &q.provider, &mut sql);
    if let Some(from) = q.from_ms {
        args.push(int(from).into());
        sql.push_str(&format!(" AND at_ms >= ?{}", args.len()));
    }
    if let Some(to) = q.to_ms {
        args.push(int(to).into());
        sql.push_str(&format!(" AND at_ms < ?{}", args.len()));
    }
    if let Some(status) = q.status {
        args.push(i64::from(status).into());
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if let Some(teams) = &q.teams {
        let mut marks = Vec::new();
        for t in teams {
            args.push(t.clone().into());
            marks.push(format!("?{}", args.len()));
        }
        if marks.is_empty() {
            return Ok(Vec::new());
        }
        sql.push_str(&format!(" AND team IN ({})", marks.join(", ")));
    }
    args.push(i64::from(q.limit.clamp(1, 10_000)).into());
    sql.push_str(&format!(" ORDER BY at_ms DESC, id DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |row| {
        let mut out = serde_json::Map::new();
        for (i, name) in COLUMNS.iter().enumerate() {
            let value = match row.get_ref(i)? {
                rusqlite::types::ValueRef::Null => continue,
                rusqlite::types::ValueRef::Integer(n) if *name == "stream" => serde_json::Value::Bool(n != 0),
                rusqlite::types::ValueRef::Integer(n) => serde_json::Value::from(n),
                rusqlite::types::ValueRef::Real(f) => serde_json::Value::from(f),
                rusqlite::types::ValueRef::Text(t) => serde_json::Value::from(String::from_utf8_lossy(t).into_owned()),
                rusqlite::types::ValueRef::Blob(_) => continue,
            };
            out.insert((*name).to_owned(), value);
        }
        Ok(serde_json::Value::Object(out))
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::request_log::Caller;

    fn record(id: &str, at_ms: u64, team: &str, status: u16) -> RequestRecord {
        RequestRecord {
            id: id.into(),
            at_ms,
            endpoint: "chat.completions",
            caller: Caller { key: Some(Arc::from("k")), team: Some(Arc::from(team)), ..Caller::default() },
            model: Some("m".into()),
            provider: Some(Arc::from("openai")),
            stream: true,
            status,
            error: (status != 200).then_some("rate_limited"),
            input_tokens: Some(3),
            output_tokens: None,
            cached_tokens: None,
            cost_micros: Some(7),
            ttft_us: Some(100),
            latency_us: 500,
            overhead_us: Some(20),
        }
    }

    #[test]
    fn records_are_written_queried_and_pruned_by_age_and_count() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let all: Vec<RequestRecord> =
            (0..10).map(|i| record(&format!("r{i}"), 1000 + i, if i % 2 == 0 { "a" } else { "b" }, 200)).collect();
        append(&conn, &all).unwrap();
        append(&conn, &[record("r9", 1, "a", 429), record("x", 2000, "a", 429)]).unwrap();
        let q = |q: RequestQuery| query(&conn, &RequestQuery { limit: 100, ..q }).unwrap();
        let newest = q(RequestQuery::default());
        assert_eq!(newest.len(), 11, "a repeated id is kept once");
        assert_eq!(newest[0]["id"], "x");
        assert_eq!(newest[0]["error"], "rate_limited");
        assert_eq!(newest[1]["stream"], true);
        assert!(newest[1].get("output_tokens").is_none(), "empty fields left out");
        assert_eq!(q(RequestQuery { team: Some("b".into()), ..Default::default() }).len(), 5);
        assert_eq!(q(RequestQuery { status: Some(429), ..Default::default() }).len(), 1);
        assert_eq!(q(RequestQuery { from_ms: Some(1005), to_ms: Some(1008), ..Default::default() }).len(), 3);
        assert_eq!(q(RequestQuery { teams: Some(vec![]), ..Default::default() }).len(), 0);
        assert_eq!(q(RequestQuery { teams: Some(vec!["a".into()]), ..Default::default() }).len(), 6);
        assert_eq!(q(RequestQuery { id: Some("r3".into()), ..Default::default() })[0]["team"], "b");
        // Older than 1005 goes; then beyond the newest 4.
        assert_eq!(prune_step(&conn, 1005, None).unwrap(), 5);
        assert_eq!(prune_step(&conn, 1005, None).unwrap(), 0);
        assert_eq!(prune_step(&conn, 0, Some(4)).unwrap(), 2);
        let left: Vec<String> =
            q(RequestQuery::default()).iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(left, ["x", "r9", "r8", "r7"]);
    }
}
