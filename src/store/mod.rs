//! The durable call queue: campaigns, call attempts and API keys in SQLite
//! (WAL). Every status change is one `UPDATE … WHERE status IN (legal
//! predecessors)`, so an illegal or concurrent transition changes nothing
//! and says so; a claim is the `queued → processing` transition, which is
//! what makes it atomic. The same statements map onto Postgres with
//! `FOR UPDATE SKIP LOCKED` when several dialers share a database; the
//! dialer only sees [`Store`]'s methods.
//!
//! Timestamps are stored as integer milliseconds since the Unix epoch (UTC)
//! so the due-attempt query is an index range; the API renders RFC 3339.
//! The store is off the media path: a `Mutex<Connection>` is fine here.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::campaign::{CampaignSpec, CampaignState};
use crate::events::{self, EventKind};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A stored JSON column did not parse (a bug or a hand edit).
    #[error("stored {what} is corrupt: {source}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// Why.
        source: serde_json::Error,
    },
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// The database is newer than this binary.
    #[error("database schema version {0} is newer than this dialgate ({1}); upgrade dialgate")]
    TooNew(i64, i64),
}

/// Post-call analysis: status (`done`, `failed`), result, error.
pub type Analysis = (Option<String>, Option<Value>, Option<String>);

/// Counts by name.
pub type Counts = Vec<(String, i64)>;

/// An attempt's status (CAMPAIGNS.md's state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Waiting for its `scheduled_for`.
    Scheduled,
    /// In the dispatch queue.
    Queued,
    /// Claimed by a dialer; the carrier request may be in flight.
    Processing,
    /// The carrier accepted the call.
    Initiated,
    /// It rings.
    Ringing,
    /// Picked up; audio flows.
    Answered,
    /// Ended after an answer.
    Completed,
    /// Could not be started (validation, carrier error).
    Failed,
    /// Busy signal.
    Busy,
    /// Rejected by the callee.
    Declined,
    /// No answer, ring time-out.
    Missed,
    /// Canceled (campaign canceled, or by the API).
    Canceled,
    /// Past `expires_at` before it could be dialled.
    Expired,
    /// On the do-not-call list.
    Suppressed,
}

/// Every status, for stats and parsing.
pub const ALL_STATUSES: [CallStatus; 14] = [
    CallStatus::Scheduled,
    CallStatus::Queued,
    CallStatus::Processing,
    CallStatus::Initiated,
    CallStatus::Ringing,
    CallStatus::Answered,
    CallStatus::Completed,
    CallStatus::Failed,
    CallStatus::Busy,
    CallStatus::Declined,
    CallStatus::Missed,
    CallStatus::Canceled,
    CallStatus::Expired,
    CallStatus::Suppressed,
];

impl CallStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Busy => "busy",
            Self::Declined => "declined",
            Self::Missed => "missed",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
            Self::Suppressed => "suppressed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL_STATUSES.into_iter().find(|x| x.as_str() == s)
    }

    /// No way out.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Scheduled
                | Self::Queued
                | Self::Processing
                | Self::Initiated
                | Self::Ringing
                | Self::Answered
        )
    }

    /// Holding a line (counts against concurrency).
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            Self::Processing | Self::Initiated | Self::Ringing | Self::Answered
        )
    }

    /// The statuses this one may be reached from.
    pub fn predecessors(self) -> &'static [CallStatus] {
        use CallStatus::*;
        match self {
            Scheduled => &[],
            Queued => &[Scheduled],
            Processing => &[Queued],
            Initiated => &[Processing],
            Ringing => &[Initiated],
            Answered => &[Initiated, Ringing],
            Completed => &[Answered],
            Failed => &[Processing, Initiated, Ringing, Answered],
            Busy | Declined | Missed => &[Initiated, Ringing],
            Canceled => &[Scheduled, Queued, Initiated, Ringing],
            Expired | Suppressed => &[Scheduled, Queued],
        }
    }
}

/// One attempt, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct CallRow {
    /// `call_queue_id`.
    pub id: String,
    /// The first attempt of this contact (itself for the first).
    pub root_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The campaign.
    pub campaign_id: String,
    /// Destination, E.164.
    pub to_number: String,
    /// Caller number id used (set when dialled).
    pub caller_number_id: Option<String>,
    /// Caller number used.
    pub caller_number: Option<String>,
    /// Carrier of the caller number.
    pub provider: Option<String>,
    /// Carrier's call id.
    pub provider_call_id: Option<String>,
    /// Status.
    pub status: CallStatus,
    /// Variables for the script.
    pub variables: Map<String, Value>,
    /// Metadata.
    pub metadata: Map<String, Value>,
    /// The user's `scheduled_for`, ms.
    pub scheduled_for: Option<i64>,
    /// When the dialer may next look at it, ms.
    pub next_attempt_at: i64,
    /// No dial after this, ms.
    pub expires_at: Option<i64>,
    /// Timestamps (ms).
    pub created_at: i64,
    /// Entered the dispatch queue.
    pub enqueued_at: Option<i64>,
    /// Claimed by the dialer.
    pub processing_started_at: Option<i64>,
    /// Reached a terminal status.
    pub completed_at: Option<i64>,
    /// Why it failed to start, or other detail of its ending.
    pub initiation_error: Option<String>,
    /// AMD outcome.
    pub answered_by: Option<String>,
    /// AMD decision time, ms after answer.
    pub amd_decision_ms: Option<i64>,
    /// Conversation id.
    pub conversation_id: Option<String>,
    /// Conversation start, ms.
    pub conversation_start: Option<i64>,
    /// Conversation end, ms.
    pub conversation_end: Option<i64>,
    /// `agent_hangup`, `user_hangup`, `voicemail_ended`, `timeout`, `failed`.
    pub end_type: Option<String>,
    /// Conversation turns (JSON array).
    pub turns: Option<Value>,
    /// The attempt this one retries.
    pub retry_of: Option<String>,
}

/// A campaign, as stored.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignRow {
    /// Id.
    pub id: String,
    /// The configuration.
    pub spec: CampaignSpec,
    /// Run state.
    pub state: CampaignState,
    /// ms.
    pub created_at: i64,
    /// ms.
    pub updated_at: i64,
}

/// A call to enqueue.
#[derive(Debug, Clone)]
pub struct NewCall {
    /// The campaign.
    pub campaign_id: String,
    /// Destination, E.164.
    pub to_number: String,
    /// Checked variables.
    pub variables: Map<String, Value>,
    /// Checked metadata.
    pub metadata: Map<String, Value>,
    /// The user's schedule, ms.
    pub scheduled_for: Option<i64>,
    /// Expiry, ms.
    pub expires_at: Option<i64>,
    /// Idempotency key (per campaign).
    pub idempotency_key: Option<String>,
    /// Suppressed at enqueue (do-not-call).
    pub suppressed: bool,
}

const SCHEMA: &[&str] = &[
    r#"
CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE calls (
    id TEXT PRIMARY KEY,
    root_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    campaign_id TEXT NOT NULL REFERENCES campaigns(id),
    to_number TEXT NOT NULL,
    caller_number_id TEXT,
    caller_number TEXT,
    provider TEXT,
    provider_call_id TEXT,
    status TEXT NOT NULL,
    variables TEXT NOT NULL,
    metadata TEXT NOT NULL,
    scheduled_for INTEGER,
    next_attempt_at INTEGER NOT NULL,
    expires_at INTEGER,
    idempotency_key TEXT,
    created_at INTEGER NOT NULL,
    enqueued_at INTEGER,
    processing_started_at INTEGER,
    completed_at INTEGER,
    initiation_error TEXT,
    answered_by TEXT,
    amd_decision_ms INTEGER,
    conversation_id TEXT,
    conversation_start INTEGER,
    conversation_end INTEGER,
    end_type TEXT,
    turns TEXT,
    retry_of TEXT REFERENCES calls(id)
);
CREATE UNIQUE INDEX calls_idempotency ON calls(campaign_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX calls_due ON calls(campaign_id, status, next_attempt_at);
CREATE INDEX calls_status ON calls(status, next_attempt_at);
CREATE INDEX calls_root ON calls(root_id);
CREATE UNIQUE INDEX calls_provider ON calls(provider_call_id)
    WHERE provider_call_id IS NOT NULL;
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    call_queue_id TEXT NOT NULL REFERENCES calls(id),
    campaign_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error TEXT,
    delivered_at INTEGER
);
CREATE UNIQUE INDEX outbox_once ON outbox(call_queue_id, kind);
CREATE INDEX outbox_due ON outbox(state, seq);
CREATE INDEX outbox_call ON outbox(call_queue_id, state, seq);
CREATE TABLE tools (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE analysis_templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
ALTER TABLE calls ADD COLUMN analysis TEXT;
ALTER TABLE calls ADD COLUMN analysis_status TEXT;
ALTER TABLE calls ADD COLUMN analysis_error TEXT;
"#,
];

const CALL_COLUMNS: &str = "id, root_id, attempt, campaign_id, to_number, caller_number_id, \
    caller_number, provider, provider_call_id, status, variables, metadata, scheduled_for, \
    next_attempt_at, expires_at, created_at, enqueued_at, processing_started_at, completed_at, \
    initiation_error, answered_by, amd_decision_ms, conversation_id, conversation_start, \
    conversation_end, end_type, turns, retry_of";

/// A new random id with a readable prefix.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// The durable queue. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

fn json_map(s: &str, what: &'static str) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(s).map_err(|source| StoreError::Corrupt { what, source })
}

fn row_to_call(r: &Row<'_>) -> rusqlite::Result<(CallRow, String, String, Option<String>)> {
    let status: String = r.get(9)?;
    Ok((
        CallRow {
            id: r.get(0)?,
            root_id: r.get(1)?,
            attempt: r.get(2)?,
            campaign_id: r.get(3)?,
            to_number: r.get(4)?,
            caller_number_id: r.get(5)?,
            caller_number: r.get(6)?,
            provider: r.get(7)?,
            provider_call_id: r.get(8)?,
            // Checked below; only this module writes the column.
            status: CallStatus::parse(&status).unwrap_or(CallStatus::Failed),
            variables: Map::new(),
            metadata: Map::new(),
            scheduled_for: r.get(12)?,
            next_attempt_at: r.get(13)?,
            expires_at: r.get(14)?,
            created_at: r.get(15)?,
            enqueued_at: r.get(16)?,
            processing_started_at: r.get(17)?,
            completed_at: r.get(18)?,
            initiation_error: r.get(19)?,
            answered_by: r.get(20)?,
            amd_decision_ms: r.get(21)?,
            conversation_id: r.get(22)?,
            conversation_start: r.get(23)?,
            conversation_end: r.get(24)?,
            end_type: r.get(25)?,
            turns: None,
            retry_of: r.get(27)?,
        },
        r.get(10)?,
        r.get(11)?,
        r.get(26)?,
    ))
}

fn finish_call(
    (mut c, vars, meta, turns): (CallRow, String, String, Option<String>),
) -> Result<CallRow, StoreError> {
    c.variables = json_map(&vars, "variables")?;
    c.metadata = json_map(&meta, "metadata")?;
    c.turns = turns
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|source| StoreError::Corrupt {
            what: "turns",
            source,
        })?;
    Ok(c)
}

/// What the carrier or the call told us, applied with a transition.
#[derive(Debug, Default, Clone)]
pub struct Patch {
    /// Carrier call id.
    pub provider_call_id: Option<String>,
    /// Error or ending detail.
    pub initiation_error: Option<String>,
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // WAL: readers never block the dialer's writes; NORMAL sync is
        // durable across process crashes (only an OS crash can lose the
        // last transactions), which is the failure the queue must survive.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self {
            conn: Arc::new(Mutex::new(conn)),
        };
        store.migrate()?;
        Ok(store)
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the
        // transaction rolls back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut db = self.db();
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let latest = SCHEMA.len() as i64;
        if version > latest {
            return Err(StoreError::TooNew(version, latest));
        }
        for (i, sql) in SCHEMA.iter().enumerate().skip(version as usize) {
            let tx = db.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    // ---- campaigns ----

    /// Saves a validated campaign.
    pub fn insert_campaign(&self, spec: &CampaignSpec, now: i64) -> Result<String, StoreError> {
        let id = new_id("cmp");
        let json = serde_json::to_string(spec).map_err(|source| StoreError::Corrupt {
            what: "campaign",
            source,
        })?;
        self.db().execute(
            "INSERT INTO campaigns (id, name, spec, state, created_at, updated_at) VALUES (?1, ?2, ?3, 'active', ?4, ?4)",
            params![id, spec.name, json, now],
        )?;
        Ok(id)
    }

    /// Replaces a campaign's configuration; attempts not yet dialled use it.
    pub fn update_campaign(
        &self,
        id: &str,
        spec: &CampaignSpec,
        now: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).map_err(|source| StoreError::Corrupt {
            what: "campaign",
            source,
        })?;
        let n = self.db().execute(
            "UPDATE campaigns SET name = ?2, spec = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, spec.name, json, now],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("campaign {id}")));
        }
        Ok(())
    }

    /// One campaign.
    pub fn campaign(&self, id: &str) -> Result<Option<CampaignRow>, StoreError> {
        let row = self
            .db()
            .query_row(
                "SELECT id, spec, state, created_at, updated_at FROM campaigns WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        row.map(campaign_row).transpose()
    }

    /// All campaigns, newest first.
    pub fn campaigns(&self) -> Result<Vec<CampaignRow>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT id, spec, state, created_at, updated_at FROM campaigns ORDER BY created_at DESC, id",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(campaign_row).collect()
    }

    /// Pause, resume or cancel. Canceling also cancels every attempt not
    /// yet dialled, in the same transaction. Returns the ids canceled.
    pub fn set_campaign_state(
        &self,
        id: &str,
        state: CampaignState,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let cur: Option<String> = tx
            .query_row("SELECT state FROM campaigns WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(cur) = cur else {
            return Err(StoreError::NotFound(format!("campaign {id}")));
        };
        // Canceled is final.
        if cur == "canceled" {
            return Ok(Vec::new());
        }
        tx.execute(
            "UPDATE campaigns SET state = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, state.as_str(), now],
        )?;
        let mut canceled = Vec::new();
        if state == CampaignState::Canceled {
            let mut st = tx.prepare(
                "UPDATE calls SET status = 'canceled', completed_at = ?2 \
                 WHERE campaign_id = ?1 AND status IN ('scheduled', 'queued') RETURNING id",
            )?;
            canceled = st
                .query_map(params![id, now], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            drop(st);
            tx.execute(
                "UPDATE calls SET initiation_error = 'canceled' WHERE campaign_id = ?1 AND status = 'canceled' AND initiation_error IS NULL",
                [id],
            )?;
            for c in &canceled {
                let row = call_on(&tx, c)?;
                emit_on(&tx, &row, EventKind::InitiationFailure, now)?;
            }
        }
        tx.commit()?;
        Ok(canceled)
    }

    // ---- calls ----

    /// Enqueues one call. With an idempotency key already used in the
    /// campaign, returns the existing attempt and `false`.
    pub fn insert_call(&self, c: &NewCall, now: i64) -> Result<(CallRow, bool), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if let Some(key) = &c.idempotency_key {
            let existing: Option<String> = tx
                .query_row(
                    "SELECT id FROM calls WHERE campaign_id = ?1 AND idempotency_key = ?2",
                    params![c.campaign_id, key],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                drop(tx);
                drop(db);
                let row = self.call(&id)?.ok_or_else(|| StoreError::NotFound(id))?;
                return Ok((row, false));
            }
        }
        let id = insert(&tx, c, now)?;
        tx.commit()?;
        drop(db);
        let row = self.call(&id)?.ok_or_else(|| StoreError::NotFound(id))?;
        Ok((row, true))
    }

    /// Enqueues a batch in one transaction (CSV import).
    pub fn insert_calls(&self, calls: &[NewCall], now: i64) -> Result<Vec<String>, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut ids = Vec::with_capacity(calls.len());
        for c in calls {
            ids.push(insert(&tx, c, now)?);
        }
        tx.commit()?;
        Ok(ids)
    }

    /// One attempt.
    pub fn call(&self, id: &str) -> Result<Option<CallRow>, StoreError> {
        let raw = self
            .db()
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"),
                [id],
                row_to_call,
            )
            .optional()?;
        raw.map(finish_call).transpose()
    }

    /// The attempt a carrier call belongs to.
    pub fn call_by_provider_id(&self, sid: &str) -> Result<Option<CallRow>, StoreError> {
        let raw = self
            .db()
            .query_row(
                &format!("SELECT {CALL_COLUMNS} FROM calls WHERE provider_call_id = ?1"),
                [sid],
                row_to_call,
            )
            .optional()?;
        raw.map(finish_call).transpose()
    }

    fn query_calls(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<CallRow>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(sql)?;
        let raw = st
            .query_map(p, row_to_call)?
            .collect::<Result<Vec<_>, _>>()?;
        raw.into_iter().map(finish_call).collect()
    }

    /// Attempts the dialer may look at now, oldest first, in campaigns that
    /// are active.
    pub fn due(&self, now: i64, limit: usize) -> Result<Vec<CallRow>, StoreError> {
        self.query_calls(
            &format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE status IN ('scheduled', 'queued') \
                 AND next_attempt_at <= ?1 \
                 AND campaign_id IN (SELECT id FROM campaigns WHERE state = 'active') \
                 ORDER BY next_attempt_at, created_at, id LIMIT ?2"
            ),
            params![now, limit as i64],
        )
    }

    /// Due attempts of one campaign, oldest first.
    pub fn due_in(
        &self,
        campaign_id: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.query_calls(
            &format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE campaign_id = ?1 AND status IN ('scheduled', 'queued') \
                 AND next_attempt_at <= ?2 ORDER BY next_attempt_at, created_at, id LIMIT ?3"
            ),
            params![campaign_id, now, limit as i64],
        )
    }

    /// Attempts holding a line (processing … answered).
    pub fn in_flight(&self) -> Result<Vec<CallRow>, StoreError> {
        self.query_calls(
            &format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE status IN ('processing', 'initiated', 'ringing', 'answered')"
            ),
            [],
        )
    }

    /// Attempts of a campaign (or all), optionally by status, paginated by id.
    pub fn calls(
        &self,
        campaign_id: Option<&str>,
        status: Option<CallStatus>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.query_calls(
            &format!(
                "SELECT {CALL_COLUMNS} FROM calls WHERE (?1 IS NULL OR campaign_id = ?1) \
                 AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id > ?3) ORDER BY id LIMIT ?4"
            ),
            params![
                campaign_id,
                status.map(CallStatus::as_str),
                after,
                limit as i64
            ],
        )
    }

    /// Every attempt of one contact, first to last.
    pub fn attempts(&self, root_id: &str) -> Result<Vec<CallRow>, StoreError> {
        self.query_calls(
            &format!("SELECT {CALL_COLUMNS} FROM calls WHERE root_id = ?1 ORDER BY attempt"),
            [root_id],
        )
    }

    /// Moves `id` to `to` if its status allows; `false` when it did not
    /// (already moved by someone else, or illegal). Terminal statuses set
    /// `completed_at`; `queued` sets `enqueued_at`; `processing` sets
    /// `processing_started_at`.
    pub fn transition(
        &self,
        id: &str,
        to: CallStatus,
        now: i64,
        patch: &Patch,
    ) -> Result<bool, StoreError> {
        transition_on(&self.db(), id, to, now, patch)
    }

    /// Ends an attempt and, when `retry_at` is set, enqueues the next one,
    /// in one transaction: a crash between the two can neither lose the
    /// retry nor leave a retry for an attempt that did not end. `false`
    /// (and no retry) when the transition was not legal.
    pub fn end_attempt(
        &self,
        id: &str,
        to: CallStatus,
        now: i64,
        patch: &Patch,
        retry_at: Option<i64>,
    ) -> Result<Option<Option<String>>, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if !transition_on(&tx, id, to, now, patch)? {
            return Ok(None);
        }
        let mut retry = None;
        if let Some(at) = retry_at {
            let prev = tx
                .query_row(
                    &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"),
                    [id],
                    row_to_call,
                )
                .map_err(StoreError::from)
                .and_then(finish_call)?;
            retry = Some(retry_on(&tx, &prev, at, now)?);
        }
        tx.commit()?;
        Ok(Some(retry))
    }

    /// The atomic claim: `queued → processing`, recording the caller
    /// number chosen for it. `false` if another dialer got it first.
    pub fn claim(
        &self,
        id: &str,
        now: i64,
        caller_id: &str,
        caller_number: &str,
        provider: &str,
    ) -> Result<bool, StoreError> {
        let n = self.db().execute(
            "UPDATE calls SET status = 'processing', processing_started_at = ?2, \
             caller_number_id = ?3, caller_number = ?4, provider = ?5 \
             WHERE id = ?1 AND status = 'queued'",
            params![id, now, caller_id, caller_number, provider],
        )?;
        Ok(n == 1)
    }

    /// Not yet eligible: look again at `at` (calling window, pacing).
    pub fn defer(&self, id: &str, at: i64) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE calls SET next_attempt_at = ?2 WHERE id = ?1 AND status IN ('scheduled', 'queued')",
            params![id, at],
        )?;
        Ok(())
    }

    /// Enqueues the next attempt of `prev`'s contact, due at `at`, in the
    /// same transaction as nothing else: the caller has already moved
    /// `prev` to its terminal status. Idempotent per (root, attempt).
    pub fn enqueue_retry(&self, prev: &CallRow, at: i64, now: i64) -> Result<String, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let id = retry_on(&tx, prev, at, now)?;
        tx.commit()?;
        Ok(id)
    }

    /// Records an AMD decision: the outcome is the latest (`machine_start`
    /// becomes `machine_end_beep`), the time is the first decision's.
    pub fn set_amd(
        &self,
        id: &str,
        answered_by: &str,
        decision_ms: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE calls SET answered_by = ?2, amd_decision_ms = COALESCE(amd_decision_ms, ?3) WHERE id = ?1",
            params![id, answered_by, decision_ms],
        )?;
        // The first decision on a live call raises Call Answered (with who
        // answered); later ones (`machine_end_*`) are in Call Ended.
        let row = call_on(&tx, id)?;
        if row.status == CallStatus::Answered {
            emit_on(&tx, &row, EventKind::Answered, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Raises `kind` for the attempt now (once per attempt and kind).
    pub fn emit(&self, id: &str, kind: EventKind, now: i64) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let row = call_on(&tx, id)?;
        emit_on(&tx, &row, kind, now)?;
        tx.commit()?;
        Ok(())
    }

    /// Records the conversation's start.
    pub fn set_conversation_start(
        &self,
        id: &str,
        conversation_id: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE calls SET conversation_id = COALESCE(conversation_id, ?2), \
             conversation_start = COALESCE(conversation_start, ?3) WHERE id = ?1",
            params![id, conversation_id, at],
        )?;
        Ok(())
    }

    /// Records the conversation's end.
    pub fn set_conversation_end(
        &self,
        id: &str,
        end_type: &str,
        at: i64,
        turns: &Value,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE calls SET end_type = COALESCE(end_type, ?2), conversation_end = COALESCE(conversation_end, ?3), \
             turns = ?4 WHERE id = ?1",
            params![id, end_type, at, turns.to_string()],
        )?;
        Ok(())
    }

    /// Counts by status and by AMD outcome.
    pub fn stats(&self, campaign_id: &str) -> Result<(Counts, Counts), StoreError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT status, COUNT(*) FROM calls WHERE campaign_id = ?1 GROUP BY status ORDER BY status",
        )?;
        let by_status = st
            .query_map([campaign_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = db.prepare(
            "SELECT answered_by, COUNT(*) FROM calls WHERE campaign_id = ?1 AND answered_by IS NOT NULL \
             GROUP BY answered_by ORDER BY answered_by",
        )?;
        let by_amd = st
            .query_map([campaign_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((by_status, by_amd))
    }

    /// Counts of every status over all campaigns (for `/metrics`).
    pub fn status_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let db = self.db();
        let mut st = db.prepare("SELECT status, COUNT(*) FROM calls GROUP BY status")?;
        let v = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    // ---- outbox ----

    /// Outbox rows ready to go, after `after_seq` in writing order: pending,
    /// due, and the oldest pending one of their call (so a call's events go
    /// out in order). Callers page with `after_seq`. `payload` is `null`:
    /// fetch it with [`Store::outbox_payload`].
    pub fn due_outbox(
        &self,
        now: i64,
        after_seq: i64,
        limit: usize,
        exclude: &[(String, String)],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        // (campaign, kind) pairs whose receiver is at its limit: SQLite
        // skips them in the index scan rather than handing them back.
        let excluded = if exclude.is_empty() {
            String::new()
        } else {
            let q = |s: &str| s.replace('\'', "''");
            format!(
                "AND (campaign_id, kind) NOT IN (VALUES {})",
                exclude
                    .iter()
                    .map(|(c, k)| format!("('{}', '{}')", q(c), q(k)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT seq, id, call_queue_id, campaign_id, kind, 'null', state, attempts, next_attempt_at, last_error, created_at, delivered_at \
             FROM outbox o WHERE state = 'pending' AND seq > ?3 AND next_attempt_at <= ?1 {excluded} \
             AND (o.kind = 'post_analysis' OR NOT EXISTS (SELECT 1 FROM outbox p \
                  WHERE p.call_queue_id = o.call_queue_id AND p.state = 'pending' \
                  AND p.seq < o.seq AND p.kind != 'post_analysis')) \
             ORDER BY seq LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![now, limit as i64, after_seq], outbox_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// An outbox row's payload (the due query leaves it out: it is only
    /// needed for the rows actually sent).
    pub fn outbox_payload(&self, id: &str) -> Result<Value, StoreError> {
        let p: String =
            self.db()
                .query_row("SELECT payload FROM outbox WHERE id = ?1", [id], |r| {
                    r.get(0)
                })?;
        serde_json::from_str(&p).map_err(|source| StoreError::Corrupt {
            what: "event payload",
            source,
        })
    }

    /// Outbox rows by state and/or call, oldest first.
    pub fn outbox(
        &self,
        state: Option<&str>,
        call_queue_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT seq, id, call_queue_id, campaign_id, kind, payload, state, attempts, next_attempt_at, last_error, created_at, delivered_at \
             FROM outbox WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR call_queue_id = ?2) ORDER BY seq LIMIT ?3",
        )?;
        let rows = st
            .query_map(params![state, call_queue_id, limit as i64], outbox_row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records a delivery attempt's result: `state` is `delivered`,
    /// `pending` (retry at `next_at`), `dead` or `no_action`.
    pub fn outbox_result(
        &self,
        id: &str,
        state: &str,
        attempts: u32,
        next_at: i64,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE outbox SET state = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5, \
             delivered_at = CASE WHEN ?2 = 'delivered' THEN ?6 ELSE delivered_at END WHERE id = ?1",
            params![id, state, attempts, next_at, error, now],
        )?;
        Ok(())
    }

    /// Puts a dead-lettered event back in the queue; `false` if it is not dead.
    pub fn replay(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let n = self.db().execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?2 WHERE id = ?1 AND state = 'dead'",
            params![id, now],
        )?;
        Ok(n == 1)
    }

    // ---- tools and analysis templates ----

    /// Saves a custom tool with its signing secret.
    pub fn insert_tool(
        &self,
        name: &str,
        spec: &Value,
        secret: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let id = new_id("tool");
        self.db().execute(
            "INSERT INTO tools (id, name, spec, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, name, spec.to_string(), secret, now],
        )?;
        Ok(id)
    }

    /// A tool's spec and secret.
    pub fn tool(&self, id: &str) -> Result<Option<(Value, String)>, StoreError> {
        let r: Option<(String, String)> = self
            .db()
            .query_row("SELECT spec, secret FROM tools WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        r.map(|(spec, secret)| {
            serde_json::from_str(&spec)
                .map(|v| (v, secret))
                .map_err(|source| StoreError::Corrupt {
                    what: "tool",
                    source,
                })
        })
        .transpose()
    }

    /// All tools (id, spec).
    pub fn tools(&self) -> Result<Vec<(String, Value)>, StoreError> {
        let db = self.db();
        let mut st = db.prepare("SELECT id, spec FROM tools ORDER BY created_at, id")?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(id, s)| {
                serde_json::from_str(&s)
                    .map(|v| (id, v))
                    .map_err(|source| StoreError::Corrupt {
                        what: "tool",
                        source,
                    })
            })
            .collect()
    }

    /// Saves an analysis template.
    pub fn insert_template(
        &self,
        name: &str,
        spec: &Value,
        now: i64,
    ) -> Result<String, StoreError> {
        let id = new_id("tpl");
        self.db().execute(
            "INSERT INTO analysis_templates (id, name, spec, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, name, spec.to_string(), now],
        )?;
        Ok(id)
    }

    /// An analysis template's spec.
    pub fn template(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let r: Option<String> = self
            .db()
            .query_row(
                "SELECT spec FROM analysis_templates WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        r.map(|s| {
            serde_json::from_str(&s).map_err(|source| StoreError::Corrupt {
                what: "template",
                source,
            })
        })
        .transpose()
    }

    /// Records post-call analysis: `status` is `done` or `failed`.
    pub fn set_analysis(
        &self,
        id: &str,
        status: &str,
        result: Option<&Value>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE calls SET analysis_status = ?2, analysis = ?3, analysis_error = ?4 WHERE id = ?1",
            params![id, status, result.map(Value::to_string), error],
        )?;
        Ok(())
    }

    /// Post-call analysis of a call: (status, result, error).
    pub fn analysis(&self, id: &str) -> Result<Analysis, StoreError> {
        let (st, res, err): (Option<String>, Option<String>, Option<String>) =
            self.db().query_row(
                "SELECT analysis_status, analysis, analysis_error FROM calls WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        Ok((st, res.and_then(|r| serde_json::from_str(&r).ok()), err))
    }

    // ---- API keys ----

    /// Stores a key's hash; the key itself is shown once and never stored.
    pub fn create_api_key(&self, now: i64) -> Result<(String, String), StoreError> {
        let id = new_id("key");
        let secret = format!(
            "dg_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.db().execute(
            "INSERT INTO api_keys (id, hash, created_at) VALUES (?1, ?2, ?3)",
            params![id, hash_key(&secret), now],
        )?;
        Ok((id, secret))
    }

    /// Whether `secret` is a stored key.
    pub fn check_api_key(&self, secret: &str) -> Result<bool, StoreError> {
        let n: i64 = self.db().query_row(
            "SELECT COUNT(*) FROM api_keys WHERE hash = ?1",
            [hash_key(secret)],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

/// One outbox row: a lifecycle event (or the post-analysis job).
#[derive(Debug, Clone, Serialize)]
pub struct OutboxRow {
    /// Order of writing.
    pub seq: i64,
    /// Event id (also the idempotency key).
    pub id: String,
    /// The attempt.
    pub call_queue_id: String,
    /// Its campaign.
    pub campaign_id: String,
    /// `call_ended` …, or `post_analysis`.
    pub kind: String,
    /// The event's variables.
    pub payload: Value,
    /// `pending`, `delivered`, `dead`, `no_action`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// Next attempt, ms.
    pub next_attempt_at: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Written, ms.
    pub created_at: i64,
    /// Delivered, ms.
    pub delivered_at: Option<i64>,
}

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    let payload: String = r.get(5)?;
    Ok(OutboxRow {
        seq: r.get(0)?,
        id: r.get(1)?,
        call_queue_id: r.get(2)?,
        campaign_id: r.get(3)?,
        kind: r.get(4)?,
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        last_error: r.get(9)?,
        created_at: r.get(10)?,
        delivered_at: r.get(11)?,
    })
}

/// SHA-256 of the key: keys are 256-bit random, so a fast hash is enough
/// (no dictionary to attack) and lookups stay an index probe.
fn hash_key(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

fn campaign_row(
    (id, spec, state, created_at, updated_at): (String, String, String, i64, i64),
) -> Result<CampaignRow, StoreError> {
    Ok(CampaignRow {
        id,
        spec: serde_json::from_str(&spec).map_err(|source| StoreError::Corrupt {
            what: "campaign",
            source,
        })?,
        state: CampaignState::parse(&state).unwrap_or(CampaignState::Paused),
        created_at,
        updated_at,
    })
}

fn transition_on(
    db: &Connection,
    id: &str,
    to: CallStatus,
    now: i64,
    patch: &Patch,
) -> Result<bool, StoreError> {
    let preds = to.predecessors();
    if preds.is_empty() {
        return Ok(false);
    }
    let list = preds
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "UPDATE calls SET status = ?2, \
         enqueued_at = CASE WHEN ?2 = 'queued' THEN ?3 ELSE enqueued_at END, \
         processing_started_at = CASE WHEN ?2 = 'processing' THEN ?3 ELSE processing_started_at END, \
         completed_at = CASE WHEN ?4 THEN ?3 ELSE completed_at END, \
         provider_call_id = COALESCE(?5, provider_call_id), \
         initiation_error = COALESCE(?6, initiation_error) \
         WHERE id = ?1 AND status IN ({list})"
    );
    let n = db.execute(
        &sql,
        params![
            id,
            to.as_str(),
            now,
            to.is_terminal(),
            patch.provider_call_id,
            patch.initiation_error
        ],
    )?;
    if n == 1 {
        let row = call_on(db, id)?;
        if let Some(kind) = EventKind::for_transition(to, row.conversation_start.is_some()) {
            if kind == EventKind::Ended {
                // Every ended call was answered: if AMD never decided,
                // Call Answered goes out now, before Call Ended.
                emit_on(db, &row, EventKind::Answered, now)?;
            }
            emit_on(db, &row, kind, now)?;
        }
    }
    Ok(n == 1)
}

fn call_on(db: &Connection, id: &str) -> Result<CallRow, StoreError> {
    db.query_row(
        &format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = ?1"),
        [id],
        row_to_call,
    )
    .map_err(StoreError::from)
    .and_then(finish_call)
}

/// Writes `kind` for `row` to the outbox (once per attempt and kind), and
/// after Call Ended the post-analysis job.
fn emit_on(db: &Connection, row: &CallRow, kind: EventKind, now: i64) -> Result<(), StoreError> {
    let payload = Value::Object(events::payload(kind, row)).to_string();
    db.execute(
        "INSERT OR IGNORE INTO outbox (id, call_queue_id, campaign_id, kind, payload, created_at, state, next_attempt_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?6)",
        params![new_id("evt"), row.id, row.campaign_id, kind.as_str(), payload, now],
    )?;
    if kind == EventKind::Ended {
        db.execute(
            "INSERT OR IGNORE INTO outbox (id, call_queue_id, campaign_id, kind, payload, created_at, state, next_attempt_at) \
             VALUES (?1, ?2, ?3, 'post_analysis', ?4, ?5, 'pending', ?5)",
            params![new_id("job"), row.id, row.campaign_id, payload, now],
        )?;
    }
    Ok(())
}

/// The next attempt of `prev`'s contact; idempotent per (root, attempt).
fn retry_on(db: &Connection, prev: &CallRow, at: i64, now: i64) -> Result<String, StoreError> {
    let existing: Option<String> = db
        .query_row(
            "SELECT id FROM calls WHERE root_id = ?1 AND attempt = ?2",
            params![prev.root_id, prev.attempt + 1],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = new_id("cq");
    db.execute(
        "INSERT INTO calls (id, root_id, attempt, campaign_id, to_number, status, variables, metadata, \
         scheduled_for, next_attempt_at, expires_at, created_at, enqueued_at, retry_of) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12)",
        params![
            id,
            prev.root_id,
            prev.attempt + 1,
            prev.campaign_id,
            prev.to_number,
            Value::Object(prev.variables.clone()).to_string(),
            Value::Object(prev.metadata.clone()).to_string(),
            at,
            at,
            prev.expires_at,
            now,
            prev.id
        ],
    )?;
    Ok(id)
}

fn insert(tx: &rusqlite::Transaction<'_>, c: &NewCall, now: i64) -> Result<String, StoreError> {
    let id = new_id("cq");
    let (status, next, enq, completed) = if c.suppressed {
        ("suppressed", now, None, Some(now))
    } else {
        match c.scheduled_for {
            Some(at) if at > now => ("scheduled", at, None, None),
            _ => ("queued", now, Some(now), None),
        }
    };
    tx.execute(
        "INSERT INTO calls (id, root_id, attempt, campaign_id, to_number, status, variables, metadata, \
         scheduled_for, next_attempt_at, expires_at, idempotency_key, created_at, enqueued_at, completed_at) \
         VALUES (?1, ?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            id,
            c.campaign_id,
            c.to_number,
            status,
            Value::Object(c.variables.clone()).to_string(),
            Value::Object(c.metadata.clone()).to_string(),
            c.scheduled_for,
            next,
            c.expires_at,
            c.idempotency_key,
            now,
            enq,
            completed
        ],
    )?;
    if c.suppressed {
        tx.execute(
            "UPDATE calls SET initiation_error = 'do_not_call' WHERE id = ?1",
            [&id],
        )?;
        let row = call_on(tx, &id)?;
        emit_on(tx, &row, EventKind::InitiationFailure, now)?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_transitions_move() {
        use CallStatus::*;
        assert!(Answered.predecessors().contains(&Ringing));
        assert!(!Completed.predecessors().contains(&Queued));
        for s in ALL_STATUSES {
            if s.is_terminal() {
                for t in ALL_STATUSES {
                    assert!(
                        !t.predecessors().contains(&s),
                        "{s:?} → {t:?} must be illegal"
                    );
                }
            }
        }
    }
}
