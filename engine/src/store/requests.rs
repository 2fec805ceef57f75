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

/// Adds the time window and the team scope to a query; `false` when the scope is no team at
/// all (nothing to find).
fn window(
    sql: &mut String,
    args: &mut Vec<rusqlite::types::Value>,
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    teams: Option<&[String]>,
) -> bool {
    if let Some(from) = from_ms {
        args.push(int(from).into());
        sql.push_str(&format!(" AND at_ms >= ?{}", args.len()));
    }
    if let Some(to) = to_ms {
        args.push(int(to).into());
        sql.push_str(&format!(" AND at_ms < ?{}", args.len()));
    }
    if let Some(teams) = teams {
        if teams.is_empty() {
            return false;
        }
        let mut marks = Vec::new();
        for t in teams {
            args.push(t.clone().into());
            marks.push(format!("?{}", args.len()));
        }
        sql.push_str(&format!(" AND team IN ({})", marks.join(", ")));
    }
    true
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
    if let Some(status) = q.status {
        args.push(i64::from(status).into());
        sql.push_str(&format!(" AND status = ?{}", args.len()));
    }
    if !window(&mut sql, &mut args, q.from_ms, q.to_ms, q.teams.as_deref()) {
        return Ok(Vec::new());
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

/// A dimension cost is attributed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostDimension {
    Key,
    User,
    Team,
    Application,
    Environment,
    Model,
    Provider,
}

impl CostDimension {
    pub const ALL: [CostDimension; 7] = [
        CostDimension::Key,
        CostDimension::User,
        CostDimension::Team,
        CostDimension::Application,
        CostDimension::Environment,
        CostDimension::Model,
        CostDimension::Provider,
    ];

    /// Its name in queries and answers, which is also its column.
    pub fn as_str(self) -> &'static str {
        match self {
            CostDimension::Key => "key",
            CostDimension::User => "user",
            CostDimension::Team => "team",
            CostDimension::Application => "application",
            CostDimension::Environment => "environment",
            CostDimension::Model => "model",
            CostDimension::Provider => "provider",
        }
    }

    pub fn parse(s: &str) -> Option<CostDimension> {
        CostDimension::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Periods cost is summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
    Month,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Granularity> {
        match s {
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            "month" => Some(Granularity::Month),
            _ => None,
        }
    }

    /// The SQL expression of a record's period, as RFC 3339 text of its start.
    fn period(self) -> &'static str {
        match self {
            Granularity::Hour => "strftime('%Y-%m-%dT%H:00:00Z', at_ms / 1000, 'unixepoch')",
            Granularity::Day => "strftime('%Y-%m-%dT00:00:00Z', at_ms / 1000, 'unixepoch')",
            Granularity::Month => "strftime('%Y-%m-01T00:00:00Z', at_ms / 1000, 'unixepoch')",
        }
    }
}

/// What `GET /admin/v1/costs` asks for.
#[derive(Debug, Clone, Default)]
pub struct CostQuery {
    pub group_by: Vec<CostDimension>,
    pub granularity: Option<Granularity>,
    /// Equality filters on dimensions.
    pub filters: Vec<(CostDimension, String)>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    /// Team admins see their teams' costs only.
    pub teams: Option<Vec<String>>,
    /// Only the `top` groups by cost (in each period, when there are periods).
    pub top: Option<u32>,
}

/// Requests, tokens and cost grouped as `q` asks, periods in order and, within each, the
/// costliest groups first; each row a JSON object (`period` first when asked, the dimensions,
/// then `requests`, `input_tokens`, `output_tokens`, `cached_tokens`, `cost_usd`).
pub fn costs(conn: &Connection, q: &CostQuery) -> rusqlite::Result<Vec<serde_json::Value>> {
    let mut select: Vec<String> = Vec::new();
    if let Some(g) = q.granularity {
        select.push(format!("{} AS period", g.period()));
    }
    select.extend(q.group_by.iter().map(|d| d.as_str().to_owned()));
    let groups = select.len();
    let mut sql = format!(
        "SELECT {}{}count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
         coalesce(sum(cached_tokens), 0), coalesce(sum(cost_micros), 0) FROM requests WHERE 1=1",
        select.join(", "),
        if select.is_empty() { "" } else { ", " }
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    for (d, v) in &q.filters {
        args.push(v.clone().into());
        sql.push_str(&format!(" AND {} = ?{}", d.as_str(), args.len()));
    }
    if !window(&mut sql, &mut args, q.from_ms, q.to_ms, q.teams.as_deref()) {
        return Ok(Vec::new());
    }
    if groups > 0 {
        sql.push_str(&format!(" GROUP BY {}", (1..=groups).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")));
    }
    let by_period = if q.granularity.is_some() { "1, " } else { "" };
    sql.push_str(&format!(" ORDER BY {by_period}{} DESC", groups + 5));
    let mut stmt = conn.prepare(&sql)?;
    let names: Vec<String> = q
        .granularity
        .map(|_| "period".to_owned())
        .into_iter()
        .chain(q.group_by.iter().map(|d| d.as_str().to_owned()))
        .collect();
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |row| {
        let mut out = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let v: Option<String> = row.get(i)?;
            out.insert(name.clone(), v.map_or(serde_json::Value::Null, serde_json::Value::from));
        }
        let n = |i: usize| row.get::<_, i64>(groups + i);
        out.insert("requests".into(), n(0)?.into());
        out.insert("input_tokens".into(), n(1)?.into());
        out.insert("output_tokens".into(), n(2)?.into());
        out.insert("cached_tokens".into(), n(3)?.into());
        out.insert("cost_usd".into(), serde_json::Value::from(n(4)? as f64 / 1e6));
        Ok(serde_json::Value::Object(out))
    })?;
    let mut all: Vec<serde_json::Value> = rows.collect::<rusqlite::Result<_>>()?;
    if let Some(top) = q.top {
        // The costliest `top` of each period (rows come per period, costliest first).
        let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        all.retain(|r| {
            let period = r.get("period").map(|p| p.to_string()).unwrap_or_default();
            let n = seen.entry(period).or_insert(0);
            *n += 1;
            *n <= top
        });
    }
    Ok(all)
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

    #[test]
    fn costs_group_by_dimensions_and_periods_with_the_top_of_each() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let hour = 3_600_000;
        let mut rs = Vec::new();
        for (i, (team, model, cost, at)) in
            [("a", "m1", 10, 0), ("a", "m1", 20, 1), ("a", "m2", 5, 2), ("b", "m1", 100, 3), ("b", "m2", 1, hour + 5)]
                .into_iter()
                .enumerate()
        {
            let mut r = record(&format!("c{i}"), 1_795_824_000_000 + at, team, 200);
            r.model = Some(model.into());
            r.cost_micros = Some(cost);
            rs.push(r);
        }
        append(&conn, &rs).unwrap();
        let by_team = costs(&conn, &CostQuery { group_by: vec![CostDimension::Team], ..Default::default() }).unwrap();
        assert_eq!(by_team[0]["team"], "b", "costliest first");
        assert_eq!(by_team[0]["cost_usd"], 0.000101);
        assert_eq!(by_team[1]["requests"], 3);
        assert_eq!(by_team[1]["input_tokens"], 9);
        let q = CostQuery {
            group_by: vec![CostDimension::Team, CostDimension::Model],
            granularity: Some(Granularity::Hour),
            top: Some(1),
            ..Default::default()
        };
        let hourly = costs(&conn, &q).unwrap();
        assert_eq!(hourly.len(), 2, "the top group of each of the two hours: {hourly:?}");
        assert_eq!(hourly[0]["period"], "2026-11-28T00:00:00Z");
        assert_eq!((hourly[0]["team"].as_str(), hourly[0]["model"].as_str()), (Some("b"), Some("m1")));
        assert_eq!(hourly[1]["period"], "2026-11-28T01:00:00Z");
        let filtered = CostQuery {
            filters: vec![(CostDimension::Model, "m1".into())],
            teams: Some(vec!["a".into()]),
            ..Default::default()
        };
        let total = costs(&conn, &filtered).unwrap();
        assert_eq!(total.len(), 1);
        assert_eq!(total[0]["requests"], 2);
        assert_eq!(total[0]["cost_usd"], 0.00003);
    }
}
