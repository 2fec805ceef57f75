//! The SQLite database behind the store: its schema, and every statement the store runs. Only
//! the store thread holds a connection; shards never touch it.
//!
//! Tables:
//! - `meta`: the pepper keys are hashed under (when the config sets none), the schema version;
//! - `entities`: teams, users, applications, keys, rate-limit rules and budgets made through the
//!   admin API, one row each, as the JSON of their spec (a key's secret is never stored, only
//!   its digest);
//! - `changes`: every admin change, appended, never rewritten: who, when, what;
//! - `spend`: the ledger, appended, never rewritten (see [`super::ledger`]);
//! - `audit`: one record per MCP tool call, hash-chained (see [`super::audit`]);
//! - `mcp_user_tokens`: users' tokens for upstream MCP servers, sealed (AES-256-GCM) under
//!   `mcp.token_key`: the store never holds them in the clear.

use std::path::Path;

use policy::spec::GovernanceSpec;
use rusqlite::{Connection, OptionalExtension, params};

use super::ledger::{Caller, SpendRow};
use super::{Entity, EntityKind, Mutation, SpendQuery, SpendReportRow};

/// Why the database could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("store {path}: {message}")]
pub struct DbError {
    pub path: String,
    pub message: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    team TEXT,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT
);
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    minute_ms INTEGER NOT NULL,
    key TEXT,
    user TEXT,
    team TEXT,
    application TEXT,
    environment TEXT,
    model TEXT NOT NULL,
    metadata TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_minute ON spend (minute_ms);
CREATE TABLE IF NOT EXISTS mcp_objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS mcp_user_tokens (
    server TEXT NOT NULL,
    user TEXT NOT NULL,
    sealed TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (server, user)
);
CREATE TABLE IF NOT EXISTS alerts (
    budget TEXT NOT NULL,
    entity TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start TEXT NOT NULL,
    threshold INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (budget, entity, period, period_start, threshold)
);
-- The ledger and the change log are append-only: the database itself refuses edits.
CREATE TRIGGER IF NOT EXISTS spend_append_only_u BEFORE UPDATE ON spend
    BEGIN SELECT RAISE(ABORT, 'the spend ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS spend_append_only_d BEFORE DELETE ON spend
    BEGIN SELECT RAISE(ABORT, 'the spend ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS changes_append_only_u BEFORE UPDATE ON changes
    BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS changes_append_only_d BEFORE DELETE ON changes
    BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END;
";

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub struct Db {
    conn: Connection,
    path: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if need be) the database in WAL mode. `synchronous = NORMAL` makes every
    /// commit durable against a crash of this process (kill -9 included); only a crash of the
    /// machine itself may lose the last commits.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let name = path.display().to_string();
        let err = |e: rusqlite::Error| DbError { path: name.clone(), message: e.to_string() };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
        // The store is written far more than read: a small page cache keeps the gateway small.
        conn.pragma_update(None, "cache_size", -256).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(super::audit::SCHEMA).map_err(err)?;
        conn.execute_batch(super::requests::SCHEMA).map_err(err)?;
        Ok(Db { conn, path: name })
    }

    fn err(&self, e: impl std::fmt::Display) -> DbError {
        DbError { path: self.path.clone(), message: e.to_string() }
    }

    /// The pepper stored beside the keys, made on first use.
    pub fn pepper(&mut self) -> Result<String, DbError> {
        let found: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE name = 'pepper'", [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(p) = found {
            return Ok(p);
        }
        let bytes = policy::keys::random_pepper().map_err(|e| self.err(e))?;
        let pepper: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.conn
            .execute("INSERT INTO meta (name, value) VALUES ('pepper', ?1)", params![pepper])
            .map_err(|e| self.err(e))?;
        Ok(pepper)
    }

    /// Everything made through the admin API, as one spec.
    pub fn load_managed(&self) -> Result<GovernanceSpec, DbError> {
        let mut spec = GovernanceSpec::default();
        let mut stmt = self
            .conn
            .prepare("SELECT kind, name, spec FROM entities ORDER BY created_ms, name")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (kind, name, json) = row.map_err(|e| self.err(e))?;
            let kind = EntityKind::parse(&kind).ok_or_else(|| self.err(format!("unknown entity kind {kind:?}")))?;
            let entity = Entity::from_json(kind, &name, &json)
                .map_err(|e| self.err(format!("{} {name:?} does not read back: {e}", kind.as_str())))?;
            entity.put_into(&mut spec);
        }
        Ok(spec)
    }

    /// Applies admin changes in one transaction: all or nothing.
    pub fn apply(&mut self, changes: &[Mutation], actor: &str, now_ms: u64) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| DbError { path: path.clone(), message: e.to_string() };
        let tx = self.conn.transaction().map_err(err)?;
        for m in changes {
            match m {
                Mutation::Put(entity) => {
                    let json = entity.to_json().map_err(|e| DbError { path: path.clone(), message: e })?;
                    let (kind, name) = (entity.kind().as_str(), entity.name());
                    tx.execute(
                        "INSERT INTO entities (kind, name, team, spec, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                         ON CONFLICT (kind, name) DO UPDATE SET team = excluded.team, spec = excluded.spec, updated_ms = excluded.updated_ms",
                        params![kind, name, entity.team(), json, i64_of(now_ms)],
                    )
                    .map_err(err)?;
                    tx.execute(
                        "INSERT INTO changes (at_ms, actor, action, kind, name, spec) VALUES (?1, ?2, 'put', ?3, ?4, ?5)",
                        params![i64_of(now_ms), actor, kind, name, json],
                    )
                    .map_err(err)?;
                }
                Mutation::Delete { kind, name } => {
                    tx.execute("DELETE FROM entities WHERE kind = ?1 AND name = ?2", params![kind.as_str(), name])
                        .map_err(err)?;
                    tx.execute(
                        "INSERT INTO changes (at_ms, actor, action, kind, name, spec) VALUES (?1, ?2, 'delete', ?3, ?4, NULL)",
                        params![i64_of(now_ms), actor, kind.as_str(), name],
                    )
                    .map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// Remembers that an alert was delivered (a restart must not deliver it again).
    pub fn record_alert(&mut self, key: &crate::alerts::AlertKey, at_ms: u64) -> Result<(), DbError> {
        let (budget, entity, period, start, threshold) = key;
        self.conn
            .execute(
                "INSERT OR IGNORE INTO alerts (budget, entity, period, period_start, threshold, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![budget, entity, period, start, threshold, i64_of(at_ms)],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Alerts delivered so far.
    pub fn alerts(&self) -> Result<Vec<crate::alerts::AlertKey>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT budget, entity, period, period_start, threshold FROM alerts")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Appends ledger rows in one transaction.
    pub fn append_spend(&mut self, rows: &[SpendRow]) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| DbError { path: path.clone(), message: e.to_string() };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO spend (minute_ms, key, user, team, application, environment, model, metadata,
                                        requests, input_tokens, output_tokens, cached_tokens, cost_micros)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(err)?;
            for r in rows {
                let c = &r.caller;
                stmt.execute(params![
                    i64_of(r.minute_ms),
                    c.key,
                    c.user,
                    c.team,
                    c.application,
                    c.environment,
                    r.model,
                    r.metadata,
                    i64_of(r.requests),
                    i64_of(r.input_tokens),
                    i64_of(r.output_tokens),
                    i64_of(r.cached_tokens),
                    i64_of(r.cost_micros),
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// The whole ledger summed per caller, model, metadata and UTC day (what budgets need after
    /// a restart: every period starts on a day boundary). `minute_ms` is the day's start.
    pub fn spend_by_day(&self) -> Result<Vec<SpendRow>, DbError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT (minute_ms / 86400000) * 86400000 AS day, key, user, team, application, environment, model, metadata,
                        SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cached_tokens), SUM(cost_micros)
                 FROM spend GROUP BY day, key, user, team, application, environment, model, metadata",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(SpendRow {
                    minute_ms: u64_of(r.get(0)?),
                    caller: Caller {
                        key: r.get(1)?,
                        user: r.get(2)?,
                        team: r.get(3)?,
                        application: r.get(4)?,
                        environment: r.get(5)?,
                    },
                    model: r.get(6)?,
                    metadata: r.get(7)?,
                    requests: u64_of(r.get(8)?),
                    input_tokens: u64_of(r.get(9)?),
                    output_tokens: u64_of(r.get(10)?),
                    cached_tokens: u64_of(r.get(11)?),
                    cost_micros: u64_of(r.get(12)?),
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Spend grouped and filtered as asked (the admin API's `/spend`).
    pub fn spend_report(&self, q: &SpendQuery) -> Result<Vec<SpendReportRow>, DbError> {
        // Column names come from a closed enum, never from the request; values are bound.
        let groups: Vec<&str> = q.group_by.iter().map(|g| g.column()).collect();
        let mut select = groups.clone();
        select.extend([
            "SUM(requests)",
            "SUM(input_tokens)",
            "SUM(output_tokens)",
            "SUM(cached_tokens)",
            "SUM(cost_micros)",
        ]);
        let mut sql = format!("SELECT {} FROM spend WHERE minute_ms >= ?1 AND minute_ms < ?2", select.join(", "));
        let mut values: Vec<rusqlite::types::Value> = vec![i64_of(q.from_ms).into(), i64_of(q.to_ms).into()];
        for (dim, allowed) in &q.filters {
            let marks: Vec<String> = allowed
                .iter()
                .map(|v| {
                    values.push(v.clone().into());
                    format!("?{}", values.len())
                })
                .collect();
            sql.push_str(&format!(" AND {} IN ({})", dim.column(), marks.join(", ")));
        }
        if !groups.is_empty() {
            sql.push_str(&format!(" GROUP BY {} ORDER BY {}", groups.join(", "), groups.join(", ")));
        }
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let n = groups.len();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(values.iter()), |r| {
                let mut group = Vec::with_capacity(n);
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    group.push(match v {
                        rusqlite::types::Value::Text(s) => Some(s),
                        rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                        _ => None,
                    });
                }
                let sum = |i: usize| -> rusqlite::Result<u64> { Ok(u64_of(r.get::<_, Option<i64>>(i)?.unwrap_or(0))) };
                Ok(SpendReportRow {
                    group,
                    requests: sum(n)?,
                    input_tokens: sum(n + 1)?,
                    output_tokens: sum(n + 2)?,
                    cached_tokens: sum(n + 3)?,
                    cost_micros: sum(n + 4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Appends MCP audit records in one transaction, chained to the trail's last record.
    pub fn append_audit(&mut self, records: &[super::audit::AuditRecord]) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| DbError { path: path.clone(), message: e.to_string() };
        let tx = self.conn.transaction().map_err(err)?;
        super::audit::append(&tx, records).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Writes an MCP object change (and its line in the change log) in one transaction.
    pub fn put_mcp(&mut self, change: &super::McpChange, actor: &str, now_ms: u64) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| DbError { path: path.clone(), message: e.to_string() };
        let tx = self.conn.transaction().map_err(err)?;
        let kind = format!("mcp_{}", change.kind);
        match &change.spec {
            Some(spec) => {
                tx.execute(
                    "INSERT INTO mcp_objects (kind, name, spec, updated_ms) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (kind, name) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms",
                    params![change.kind, change.name, spec, i64_of(now_ms)],
                )
                .map_err(err)?;
            }
            None => {
                tx.execute("DELETE FROM mcp_objects WHERE kind = ?1 AND name = ?2", params![change.kind, change.name])
                    .map_err(err)?;
            }
        }
        let action = if change.spec.is_some() { "put" } else { "delete" };
        tx.execute(
            "INSERT INTO changes (at_ms, actor, action, kind, name, spec) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![i64_of(now_ms), actor, action, kind, change.name, change.spec],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Every MCP object the admin API made: (kind, name, spec JSON).
    pub fn mcp_objects(&self) -> Result<Vec<(String, String, String)>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, name, spec FROM mcp_objects ORDER BY kind, name")
            .map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Keeps one user's sealed tokens for one server (replacing the ones before).
    pub fn put_user_token(&mut self, server: &str, user: &str, sealed: &str, at_ms: u64) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO mcp_user_tokens (server, user, sealed, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (server, user) DO UPDATE SET sealed = excluded.sealed, updated_ms = excluded.updated_ms",
                params![server, user, sealed, i64_of(at_ms)],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Writes request-log records in one transaction.
    pub fn append_requests(&mut self, batches: &[super::RequestBatch]) -> Result<(), DbError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| DbError { path: path.clone(), message: e.to_string() };
        let tx = self.conn.transaction().map_err(err)?;
        super::requests::append(&tx, batches.iter().flat_map(|b| b.iter())).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// One step of request-log retention ([`super::requests::prune_step`]).
    pub fn prune_requests(&mut self, before_ms: u64, max_rows: Option<u64>) -> Result<usize, DbError> {
        super::requests::prune_step(&self.conn, before_ms, max_rows).map_err(|e| self.err(e))
    }

    /// Cost attribution from the request log ([`super::requests::costs`]).
    pub fn costs(&self, q: &super::requests::CostQuery) -> Result<Vec<serde_json::Value>, DbError> {
        super::requests::costs(&self.conn, q).map_err(|e| self.err(e))
    }

    /// Request-log records matching `q`, newest first.
    pub fn request_query(&self, q: &super::requests::RequestQuery) -> Result<Vec<serde_json::Value>, DbError> {
        super::requests::query(&self.conn, q).map_err(|e| self.err(e))
    }

    /// Forgets one user's tokens for one server.
    pub fn delete_user_token(&mut self, server: &str, user: &str) -> Result<(), DbError> {
        self.conn
            .execute("DELETE FROM mcp_user_tokens WHERE server = ?1 AND user = ?2", params![server, user])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every (server, user, sealed tokens).
    pub fn user_tokens(&self) -> Result<Vec<(String, String, String)>, DbError> {
        let mut stmt =
            self.conn.prepare("SELECT server, user, sealed FROM mcp_user_tokens").map_err(|e| self.err(e))?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Audit records matching `q`, newest first.
    pub fn audit_query(&self, q: &super::audit::AuditQuery) -> Result<Vec<serde_json::Value>, DbError> {
        super::audit::query(&self.conn, q).map_err(|e| self.err(e))
    }

    /// Runs raw SQL (tests: proving the ledger refuses edits).
    #[cfg(test)]
    pub fn execute(&self, sql: &str) -> Result<usize, rusqlite::Error> {
        self.conn.execute(sql, [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Dimension;
    use policy::spec::TeamSpec;

    fn row(key: &str, team: &str, model: &str, minute_ms: u64, cost: u64) -> SpendRow {
        SpendRow {
            minute_ms,
            caller: Caller { key: Some(key.into()), team: Some(team.into()), ..Caller::default() },
            model: model.into(),
            metadata: "{}".into(),
            requests: 1,
            input_tokens: 10,
            output_tokens: 20,
            cached_tokens: 0,
            cost_micros: cost,
        }
    }

    #[test]
    fn entities_round_trip_and_changes_are_logged() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.db")).unwrap();
        let team = Entity::Team("search".into(), TeamSpec { models: vec!["gpt-*".into()], ..TeamSpec::default() });
        db.apply(&[Mutation::Put(Box::new(team))], "test", 1).unwrap();
        let spec = db.load_managed().unwrap();
        assert_eq!(spec.teams["search"].models, ["gpt-*"]);
        db.apply(&[Mutation::Delete { kind: EntityKind::Team, name: "search".into() }], "test", 2).unwrap();
        assert!(db.load_managed().unwrap().teams.is_empty());
        let logged: i64 = db.conn.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0)).unwrap();
        assert_eq!(logged, 2);
        assert!(db.execute("DELETE FROM changes").is_err(), "the change log is append-only");
    }

    #[test]
    fn delivered_alerts_are_remembered_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.db")).unwrap();
        let key = ("b".to_string(), "t".to_string(), "month".to_string(), "2026-11-01".to_string(), 50u8);
        db.record_alert(&key, 1).unwrap();
        db.record_alert(&key, 2).unwrap();
        assert_eq!(db.alerts().unwrap(), [key]);
    }

    #[test]
    fn pepper_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let first = Db::open(&path).unwrap().pepper().unwrap();
        assert!(first.len() >= 32);
        assert_eq!(Db::open(&path).unwrap().pepper().unwrap(), first);
    }

    #[test]
    fn ledger_sums_by_day_and_refuses_edits() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.db")).unwrap();
        let day = 86_400_000;
        db.append_spend(&[row("a", "t", "m", 60_000, 5), row("a", "t", "m", 120_000, 7), row("a", "t", "m", day, 1)])
            .unwrap();
        let mut by_day = db.spend_by_day().unwrap();
        by_day.sort_by_key(|r| r.minute_ms);
        assert_eq!(
            by_day.iter().map(|r| (r.minute_ms, r.cost_micros, r.requests)).collect::<Vec<_>>(),
            [(0, 12, 2), (day, 1, 1)]
        );
        assert!(db.execute("UPDATE spend SET cost_micros = 0").is_err());
        assert!(db.execute("DELETE FROM spend").is_err());
    }

    #[test]
    fn report_groups_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.db")).unwrap();
        let day = 86_400_000;
        db.append_spend(&[
            row("a", "search", "gpt", 0, 5),
            row("b", "search", "claude", 0, 7),
            row("c", "ads", "gpt", day, 11),
        ])
        .unwrap();
        let q = SpendQuery {
            group_by: vec![Dimension::Team, Dimension::Model],
            filters: vec![],
            from_ms: 0,
            to_ms: 2 * day,
        };
        let rows = db.spend_report(&q).unwrap();
        let flat: Vec<_> = rows.iter().map(|r| (r.group.clone(), r.cost_micros)).collect();
        assert_eq!(
            flat,
            [
                (vec![Some("ads".to_string()), Some("gpt".to_string())], 11),
                (vec![Some("search".to_string()), Some("claude".to_string())], 7),
                (vec![Some("search".to_string()), Some("gpt".to_string())], 5),
            ]
        );
        let q = SpendQuery {
            group_by: vec![Dimension::Day],
            filters: vec![(Dimension::Team, vec!["search".into()])],
            from_ms: 0,
            to_ms: 2 * day,
        };
        let rows = db.spend_report(&q).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].group[0].as_deref(), rows[0].cost_micros, rows[0].requests), (Some("1970-01-01"), 12, 2));
    }
}
