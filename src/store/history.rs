//! Looking back at events: the query behind `GET /v1/events` with its filters and both
//! orders, and an event's outcome. The SQL is written once here for both backends (it uses
//! only what SQLite and PostgreSQL share); they supply the placeholder style and bind values.
//!
//! **Two orders.** Ascending is the feed: by position (`seq`) after a cursor, as a follower
//! reads it. Descending is browsing: newest first by the time the event was stored, ties by
//! position, and the page cursor is that pair (`{created_at}.{seq}`), so each filter walks one
//! index from the newest match down: `events_history` `(instance_id, created_at, seq)`,
//! `events_by_kind` `(instance_id, kind, created_at, seq)` and `events_by_number`
//! `(instance_id, conversation, created_at, seq)`. A time range is a range of that index, not
//! a scan.
//!
//! **Outcome** is where an event stands towards its endpoints, the worst first: `dead` (the
//! latest delivery to some endpoint that still exists gave up; a deleted endpoint's dead
//! deliveries cannot be resent, so they no longer make the event dead), `failing` (a delivery still retrying after a
//! failure), `pending` (a delivery not yet made, or waiting its turn), `delivered` (every
//! endpoint took it), `none` (no endpoint takes its type, or the only one that gave up on it
//! was deleted since). [`OUTCOME_CASE`] states it once;
//! the answer shows it and the filter selects by it. `dead` and `failing` are rare, so their
//! filters start from those deliveries (the partial indexes `deliveries_dead` and
//! `deliveries_queue`, reached through the instance's endpoints, joined to events in that
//! order); `pending` events are the newest and `delivered` the most, so those filters read
//! events newest first and stop at the limit.
//!
//! **By message.** A message id finds the events that carry it: the message's own event, its
//! acks, and a customer's reply or reaction that quotes it (its `context`), all in its
//! conversation. The API looks the message up first; the query then reads that conversation's
//! events and keeps those whose payload holds `"message_id":"<id>"` exactly, case included
//! (payloads are compact JSON that botlinkd wrote, so the text is exact).

use crate::clock::Millis;
use crate::events::{EventKind, EventRecord};

/// Where an event stands towards its endpoints (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every endpoint that takes it has it.
    Delivered,
    /// A delivery is retrying after a failure.
    Failing,
    /// The latest delivery to some endpoint ran out of retries.
    Dead,
    /// A delivery has not been made yet (due, in flight, or behind an earlier event).
    Pending,
    /// No endpoint takes it (or the only one that gave up on it was deleted).
    None,
}

impl Outcome {
    /// The outcomes a filter may ask for.
    pub const FILTERABLE: [Outcome; 4] = [Outcome::Delivered, Outcome::Failing, Outcome::Dead, Outcome::Pending];

    /// The name in answers and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failing => "failing",
            Outcome::Dead => "dead",
            Outcome::Pending => "pending",
            Outcome::None => "none",
        }
    }

    /// Reads a name written by [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "delivered" => Outcome::Delivered,
            "failing" => Outcome::Failing,
            "dead" => Outcome::Dead,
            "pending" => Outcome::Pending,
            "none" => Outcome::None,
            _ => return None,
        })
    }
}

/// The outcome of the event `e`, as SQL both backends run (delivery states: 0 waiting,
/// 1 pending, 2 delivered, 3 dead; see `rules::DeliveryState`). Each test is a scalar
/// subquery with `LIMIT 1` rather than `EXISTS`: PostgreSQL may turn a correlated `EXISTS`
/// into one hash of every matching delivery, which reads the whole table for a page of 50.
/// The states are tested as ranges (`< 2` for waiting or pending, `> 2` for dead), which no
/// partial index's predicate matches, so each test reaches an event's few deliveries through
/// `deliveries_by_event` alone: written as `IN (0, 1)` or `= 3`, PostgreSQL with stale
/// statistics intersected that with the partial indexes `deliveries_queue` and
/// `deliveries_dead`, reading every unfinished or dead delivery for each event listed (216 ms
/// instead of 7 for a feed page of 1,000 events over 5,000 unfinished deliveries).
pub const OUTCOME_CASE: &str = "CASE \
    WHEN (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state > 2 \
        AND EXISTS (SELECT 1 FROM endpoints x WHERE x.id = d.endpoint_id) \
        AND NOT EXISTS (SELECT 1 FROM deliveries n WHERE n.event_seq = d.event_seq \
                        AND n.endpoint_id = d.endpoint_id AND n.id > d.id) LIMIT 1) IS NOT NULL THEN 'dead' \
    WHEN (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state < 2 AND d.failures > 0 LIMIT 1) IS NOT NULL \
        THEN 'failing' \
    WHEN (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state < 2 LIMIT 1) IS NOT NULL THEN 'pending' \
    WHEN (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq AND d.state = 2 LIMIT 1) IS NOT NULL THEN 'delivered' \
    ELSE 'none' END";

/// Which way a page goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryOrder {
    /// The feed: oldest first, after a position.
    Ascending {
        /// Only events after this position.
        after: i64,
    },
    /// Browsing: newest first, before a (stored at, position) pair, or from the newest.
    Descending {
        /// Only events before this point.
        before: Option<(Millis, i64)>,
    },
}

/// What to look for in an instance's events. Test events are never included.
#[derive(Clone, Debug)]
pub struct EventQuery {
    /// Only these types (none: every type).
    pub kinds: Vec<EventKind>,
    /// Only this customer's conversation.
    pub number: Option<String>,
    /// Only events whose payload carries this message id (set `number` to its conversation).
    pub message_id: Option<String>,
    /// Only the event with this id.
    pub event_id: Option<String>,
    /// Only events with this outcome.
    pub outcome: Option<Outcome>,
    /// Only events stored at or after this time.
    pub since: Option<Millis>,
    /// Only events stored before this time.
    pub until: Option<Millis>,
    /// Which way, from where.
    pub order: HistoryOrder,
    /// The most events to return.
    pub limit: u32,
}

impl EventQuery {
    /// Every event of the feed after `after`, oldest first.
    pub fn feed(after: i64, limit: u32) -> Self {
        Self {
            kinds: Vec::new(),
            number: None,
            message_id: None,
            event_id: None,
            outcome: None,
            since: None,
            until: None,
            order: HistoryOrder::Ascending { after },
            limit,
        }
    }

    /// The one event with this id, test events included, read as browsing is (not held back
    /// by the feed's horizon on PostgreSQL).
    pub fn by_id(event_id: &str) -> Self {
        Self {
            event_id: Some(event_id.to_string()),
            order: HistoryOrder::Descending { before: None },
            ..Self::feed(0, 1)
        }
    }
}

/// An event with its outcome.
#[derive(Clone, Debug)]
pub struct HistoryEvent {
    /// The event.
    pub event: EventRecord,
    /// Where it stands.
    pub outcome: Outcome,
}

/// What an instance did from some time on, for the portal's overview.
#[derive(Clone, Debug, Default)]
pub struct OverviewCounts {
    /// Events by type and hour (ms since the epoch, a multiple of an hour): (type, hour,
    /// count), the first hour counted from `since`. Counted hour by hour and type by type from
    /// `events_by_kind`, reading the index only.
    pub events_by_hour: Vec<(String, Millis, i64)>,
    /// Attempts to the instance's endpoints that succeeded.
    pub attempt_successes: i64,
    /// And that failed.
    pub attempt_failures: i64,
    /// Deliveries not yet made (pending or waiting) now.
    pub waiting: i64,
    /// The instance's endpoints.
    pub endpoints: i64,
    /// Of which are disabled.
    pub disabled_endpoints: i64,
}

/// An hour, in milliseconds.
pub const HOUR: Millis = 3_600_000;

/// The hours from `since` to `until`: (the hour's start, from, to), the first from `since`,
/// the last up to `until`.
pub fn hours(since: Millis, until: Millis) -> impl Iterator<Item = (Millis, Millis, Millis)> {
    let first = since - since.rem_euclid(HOUR);
    (0..=((until - first).max(0) / HOUR)).map(move |i| {
        let hour = first + i * HOUR;
        (hour, hour.max(since), (hour + HOUR).min(until.max(since)))
    })
}

/// A value to bind to a placeholder.
#[derive(Clone, Debug, PartialEq)]
pub enum Bind {
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
}

/// A statement with its values, in placeholder order.
#[derive(Debug)]
pub struct Statement {
    /// The SQL.
    pub sql: String,
    /// The values for its placeholders 1, 2, ….
    pub binds: Vec<Bind>,
}

/// The columns selected (the event's, then `outcome`).
pub const HISTORY_COLUMNS: &str = "e.seq, e.id, e.instance_id, e.kind, e.conversation, e.payload, e.created_at";

/// The little that differs between the backends' SQL here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `?n` placeholders, `instr`.
    Sqlite,
    /// `$n` placeholders, `strpos`.
    Postgres,
}

impl Dialect {
    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// Whether `text` holds `part`, exactly (`LIKE` would ignore case on SQLite).
    fn contains(self, text: &str, part: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({text}, {part}) > 0"),
            Dialect::Postgres => format!("strpos({text}, {part}) > 0"),
        }
    }
}

/// Writes the query for an instance's events in a backend's `dialect`; `extra_columns` is
/// appended to the select list.
pub fn history_statement(instance_id: i64, query: &EventQuery, dialect: Dialect, extra_columns: &str) -> Statement {
    let placeholder = |n| dialect.placeholder(n);
    let mut binds = vec![Bind::Int(instance_id)];
    let mut bind = |value: Bind| {
        binds.push(value);
        placeholder(binds.len())
    };
    let mut conditions = vec![format!("e.instance_id = {}", placeholder(1))];
    // An id names one event, a test event too; lists leave test events out.
    if query.event_id.is_none() {
        conditions.push("e.kind != 'test'".to_string());
    }
    if !query.kinds.is_empty() {
        let kinds: Vec<String> = query
            .kinds
            .iter()
            .map(|k| bind(Bind::Text(k.as_str().into())))
            .collect();
        conditions.push(format!("e.kind IN ({})", kinds.join(", ")));
    }
    if let Some(number) = &query.number {
        conditions.push(format!("e.conversation = {}", bind(Bind::Text(number.clone()))));
    }
    if let Some(message_id) = &query.message_id {
        let text = format!("\"message_id\":{}", serde_json::Value::from(message_id.as_str()));
        let part = bind(Bind::Text(text));
        conditions.push(dialect.contains("e.payload", &part));
    }
    if let Some(event_id) = &query.event_id {
        conditions.push(format!("e.id = {}", bind(Bind::Text(event_id.clone()))));
    }
    if let Some(since) = query.since {
        conditions.push(format!("e.created_at >= {}", bind(Bind::Int(since))));
    }
    if let Some(until) = query.until {
        conditions.push(format!("e.created_at < {}", bind(Bind::Int(until))));
    }
    // The rare outcomes start from their deliveries (few rows, through partial indexes); the
    // others read events newest first and stop at the limit.
    let mut source = "events e".to_string();
    if let Some(outcome) = query.outcome {
        let candidates = match outcome {
            Outcome::Dead => Some("d.state = 3"),
            Outcome::Failing => Some("d.state IN (0, 1) AND d.failures > 0"),
            Outcome::Pending | Outcome::Delivered | Outcome::None => None,
        };
        if let Some(candidates) = candidates {
            source = format!(
                "(SELECT DISTINCT d.event_seq AS seq FROM deliveries d WHERE {candidates} AND d.endpoint_id IN \
                 (SELECT x.id FROM endpoints x WHERE x.instance_id = {})) AS c CROSS JOIN events e",
                placeholder(1)
            );
            conditions.push("e.seq = c.seq".to_string());
        }
        conditions.push(format!(
            "({OUTCOME_CASE}) = {}",
            bind(Bind::Text(outcome.as_str().into()))
        ));
    }
    let order = match query.order {
        HistoryOrder::Ascending { after } => {
            conditions.push(format!("e.seq > {}", bind(Bind::Int(after))));
            "e.seq"
        }
        HistoryOrder::Descending { before } => {
            if let Some((at, seq)) = before {
                let (at_1, at_2, seq) = (bind(Bind::Int(at)), bind(Bind::Int(at)), bind(Bind::Int(seq)));
                // Spelled out rather than as a row value, which older SQLite cannot use an index for.
                conditions.push(format!(
                    "e.created_at <= {at_1} AND (e.created_at < {at_2} OR e.seq < {seq})"
                ));
            }
            "e.created_at DESC, e.seq DESC"
        }
    };
    let limit = bind(Bind::Int(i64::from(query.limit)));
    Statement {
        sql: format!(
            "SELECT {HISTORY_COLUMNS}, ({OUTCOME_CASE}) AS outcome{extra_columns} FROM {source} \
             WHERE {} ORDER BY {order} LIMIT {limit}",
            conditions.join(" AND ")
        ),
        binds,
    }
}

/// The paging cursor of a descending page: the last event's stored time and position.
pub fn descending_cursor(event: &EventRecord) -> String {
    format!("{}.{}", event.created_at, event.seq)
}

/// Reads a cursor written by [`descending_cursor`].
pub fn parse_descending_cursor(text: &str) -> Option<(Millis, i64)> {
    let (at, seq) = text.split_once('.')?;
    Some((at.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descending_cursors_read_back_and_refuse_junk() {
        let event = EventRecord {
            seq: 42,
            id: "evt_1".into(),
            instance_id: 1,
            kind: EventKind::Message,
            conversation: "1".into(),
            payload: "{}".into(),
            created_at: 1_700_000_000_000,
        };
        assert_eq!(
            parse_descending_cursor(&descending_cursor(&event)),
            Some((1_700_000_000_000, 42))
        );
        for junk in ["", "12", "a.b", "1.", ".2", "1.2.3"] {
            assert_eq!(parse_descending_cursor(junk), None, "{junk}");
        }
    }

    #[test]
    fn every_filter_adds_its_condition_and_binds_in_order() {
        let query = EventQuery {
            kinds: vec![EventKind::Message, EventKind::AckRead],
            number: Some("447700900001".into()),
            outcome: Some(Outcome::Dead),
            since: Some(10),
            until: Some(20),
            order: HistoryOrder::Descending { before: Some((15, 7)) },
            ..EventQuery::feed(0, 50)
        };
        let s = history_statement(9, &query, Dialect::Postgres, "");
        assert!(s.sql.contains("e.kind IN ($2, $3)"), "{}", s.sql);
        assert!(s.sql.contains("e.conversation = $4"), "{}", s.sql);
        assert!(s.sql.contains("WHERE d.state = 3 AND d.endpoint_id IN"), "{}", s.sql);
        assert!(s.sql.contains(") AS c CROSS JOIN events e WHERE"), "{}", s.sql);
        assert!(
            s.sql.ends_with("ORDER BY e.created_at DESC, e.seq DESC LIMIT $11"),
            "{}",
            s.sql
        );
        assert_eq!(s.binds.len(), 11);
        assert_eq!(s.binds[0], Bind::Int(9));
        assert_eq!(s.binds[6], Bind::Text("dead".into()));
    }

    #[test]
    fn hours_cover_the_range_clipped_at_both_ends() {
        let hours: Vec<_> = hours(HOUR + 5, 3 * HOUR + 7).collect();
        assert_eq!(
            hours,
            [
                (HOUR, HOUR + 5, 2 * HOUR),
                (2 * HOUR, 2 * HOUR, 3 * HOUR),
                (3 * HOUR, 3 * HOUR, 3 * HOUR + 7)
            ]
        );
        assert_eq!(hours_of(5, 5), [(0, 5, 5)]);
    }

    fn hours_of(since: Millis, until: Millis) -> Vec<(Millis, Millis, Millis)> {
        hours(since, until).collect()
    }

    #[test]
    fn a_message_id_is_matched_as_its_exact_json_text() {
        let query = EventQuery {
            message_id: Some("wamid_1%".into()),
            ..EventQuery::feed(0, 10)
        };
        let s = history_statement(1, &query, Dialect::Sqlite, "");
        assert_eq!(s.binds[1], Bind::Text(r#""message_id":"wamid_1%""#.into()));
        assert!(s.sql.contains("instr(e.payload, ?2) > 0"), "{}", s.sql);
        let by_id = history_statement(1, &EventQuery::by_id("evt_1"), Dialect::Postgres, "");
        assert!(
            !by_id.sql.contains("'test'"),
            "an id finds test events too: {}",
            by_id.sql
        );
    }
}
