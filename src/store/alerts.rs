//! Alerting's tables (schema v3): alerts and their occurrences, groups, silences, the notification
//! outbox and every delivery attempt. The alerting module composes changes in an [`AlertTx`] and
//! commits them through the group-commit writer, so an alert and the notifications it causes are
//! durable together. What several processes decide on together (the open alert of a fingerprint,
//! a group's next message, a send, a bot's rate window) is done in a [`Tx`] with row locks and
//! conditional updates (schema v7): the database is the coordinator.

use super::Store;
use super::db::{Arg, Backend, Stmt, Tx, Ty, Val};
use serde::Serialize;
use std::borrow::Cow;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertRecord {
    pub id: String,
    pub fingerprint: String,
    pub flow: String,
    pub node: String,
    pub error_kind: String,
    pub severity: String,
    /// `firing`, `resolved` or `silenced`.
    pub status: String,
    /// JSON object of labels (status, event …); shown as that object.
    #[serde(serialize_with = "labels_as_json")]
    pub labels: String,
    pub count: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_run_id: Option<String>,
    pub last_message: Option<String>,
    pub acked_at: Option<i64>,
    pub acked_by: Option<String>,
    pub escalated_at: Option<i64>,
    /// When a notification first carried this alert.
    pub notified_at: Option<i64>,
    pub resolved_at: Option<i64>,
}

fn labels_as_json<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    super::as_json(&Some(text.to_owned()), s)
}

const ALERT_COLS: &str = "id, fingerprint, flow, node, error_kind, severity, status, labels, count, first_seen, last_seen, last_run_id, last_message, acked_at, acked_by, escalated_at, notified_at, resolved_at";
const ALERT_TYS: &[Ty] = &[
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::Str,
    Ty::I64,
    Ty::I64,
    Ty::I64,
    Ty::Str,
    Ty::Str,
    Ty::I64,
    Ty::Str,
    Ty::I64,
    Ty::I64,
    Ty::I64,
];

fn alert_from(r: Vec<Val>) -> AlertRecord {
    AlertRecord {
        id: r[0].str().unwrap_or_default(),
        fingerprint: r[1].str().unwrap_or_default(),
        flow: r[2].str().unwrap_or_default(),
        node: r[3].str().unwrap_or_default(),
        error_kind: r[4].str().unwrap_or_default(),
        severity: r[5].str().unwrap_or_default(),
        status: r[6].str().unwrap_or_default(),
        labels: r[7].str().unwrap_or_default(),
        count: r[8].i64().unwrap_or(0),
        first_seen: r[9].i64().unwrap_or(0),
        last_seen: r[10].i64().unwrap_or(0),
        last_run_id: r[11].str(),
        last_message: r[12].str(),
        acked_at: r[13].i64(),
        acked_by: r[14].str(),
        escalated_at: r[15].i64(),
        notified_at: r[16].i64(),
        resolved_at: r[17].i64(),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GroupRecord {
    /// A hash of route, channel and the group's label values.
    pub group_key: String,
    pub route: i64,
    pub channel: String,
    pub labels: String,
    pub created_at: i64,
    /// Set while the group has news not yet sent.
    pub dirty_since: Option<i64>,
    pub last_sent_at: Option<i64>,
    /// When the group is next looked at (flush of news, or a repeat).
    pub next_flush_at: Option<i64>,
}

const GROUP_COLS: &str = "group_key, route, channel, labels, created_at, dirty_since, last_sent_at, next_flush_at";
const GROUP_TYS: &[Ty] = &[Ty::Str, Ty::I64, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64];

fn group_from(r: Vec<Val>) -> GroupRecord {
    GroupRecord {
        group_key: r[0].str().unwrap_or_default(),
        route: r[1].i64().unwrap_or(0),
        channel: r[2].str().unwrap_or_default(),
        labels: r[3].str().unwrap_or_default(),
        created_at: r[4].i64().unwrap_or(0),
        dirty_since: r[5].i64(),
        last_sent_at: r[6].i64(),
        next_flush_at: r[7].i64(),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationRecord {
    pub id: String,
    pub group_key: Option<String>,
    pub channel: String,
    /// `firing`, `resolved`, `escalation`, `failover`, `dead`, `test`, `notify`.
    pub purpose: String,
    pub severity: String,
    /// The rendered message (JSON), secrets already masked.
    pub message: String,
    /// `pending`, `sent` or `dead`.
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub sent_at: Option<i64>,
    pub last_error: Option<String>,
    /// Where it goes when this channel fails for good.
    pub backup: Option<String>,
    /// The notification this one replaces on a backup channel.
    pub failover_of: Option<String>,
}

const NOTE_COLS: &str = "id, group_key, channel, purpose, severity, message, status, attempts, created_at, next_attempt_at, sent_at, last_error, backup, failover_of";
const NOTE_TYS: &[Ty] =
    &[Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::Str, Ty::Str, Ty::Str];

fn note_from(r: Vec<Val>) -> NotificationRecord {
    NotificationRecord {
        id: r[0].str().unwrap_or_default(),
        group_key: r[1].str(),
        channel: r[2].str().unwrap_or_default(),
        purpose: r[3].str().unwrap_or_default(),
        severity: r[4].str().unwrap_or_default(),
        message: r[5].str().unwrap_or_default(),
        status: r[6].str().unwrap_or_default(),
        attempts: r[7].i64().unwrap_or(0),
        created_at: r[8].i64().unwrap_or(0),
        next_attempt_at: r[9].i64().unwrap_or(0),
        sent_at: r[10].i64(),
        last_error: r[11].str(),
        backup: r[12].str(),
        failover_of: r[13].str(),
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryRecord {
    pub notification_id: String,
    pub channel: String,
    pub attempt: i64,
    pub at: i64,
    pub duration_ms: i64,
    pub http_status: Option<i64>,
    /// `sent`, `retry`, `rate_limited`, `failed`.
    pub outcome: String,
    /// The service's answer, masked and cut.
    pub answer: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SilenceRecord {
    pub id: String,
    /// JSON object: label → value (flow, node, error_kind, severity, status).
    pub matchers: String,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub ends_at: i64,
    pub expired_at: Option<i64>,
}

/// Filters for listings.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub status: Option<String>,
    pub flow: Option<String>,
    pub limit: Option<i64>,
}

/// Changes committed together.
pub struct AlertTx {
    backend: Backend,
    pub(crate) stmts: Vec<Stmt>,
}

impl AlertTx {
    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }

    fn push(&mut self, sql: impl Into<Cow<'static, str>>, args: Vec<Arg>) {
        self.stmts.push((sql.into(), args));
    }

    /// The alert is acknowledged (no escalation, no repeats).
    pub fn ack_alert(&mut self, id: &str, at: i64, by: &str) {
        self.push("UPDATE alerts SET acked_at = ?, acked_by = ? WHERE id = ?", vec![at.into(), by.into(), id.into()]);
    }

    /// A notification first carried the alert at `at` (kept if one did before).
    pub fn mark_notified(&mut self, id: &str, at: i64) {
        self.push("UPDATE alerts SET notified_at = ? WHERE id = ? AND notified_at IS NULL", vec![at.into(), id.into()]);
    }

    pub fn occurrence(&mut self, alert_id: &str, run_id: Option<&str>, at: i64, status: &str, message: Option<&str>) {
        self.push(
            "INSERT INTO alert_occurrences (alert_id, run_id, at, status, message) VALUES (?, ?, ?, ?, ?)",
            vec![alert_id.into(), run_id.into(), at.into(), status.into(), message.into()],
        );
    }

    pub fn insert_group(&mut self, g: &GroupRecord) {
        let sql = format!("INSERT INTO alert_groups ({GROUP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        self.push(
            sql,
            vec![
                g.group_key.as_str().into(),
                g.route.into(),
                g.channel.as_str().into(),
                g.labels.as_str().into(),
                g.created_at.into(),
                g.dirty_since.into(),
                g.last_sent_at.into(),
                g.next_flush_at.into(),
            ],
        );
    }

    pub fn update_group(&mut self, g: &GroupRecord) {
        self.push(
            "UPDATE alert_groups SET dirty_since = ?, last_sent_at = ?, next_flush_at = ? WHERE group_key = ?",
            vec![g.dirty_since.into(), g.last_sent_at.into(), g.next_flush_at.into(), g.group_key.as_str().into()],
        );
    }

    pub fn add_member(&mut self, group_key: &str, alert_id: &str) {
        let sql = match self.backend {
            Backend::Sqlite => "INSERT OR IGNORE INTO alert_group_members (group_key, alert_id) VALUES (?, ?)",
            Backend::MySql => "INSERT IGNORE INTO alert_group_members (group_key, alert_id) VALUES (?, ?)",
            Backend::Postgres => "INSERT INTO alert_group_members (group_key, alert_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        };
        self.push(sql, vec![group_key.into(), alert_id.into()]);
    }

    pub fn insert_notification(&mut self, n: &NotificationRecord) {
        let sql = format!("INSERT INTO notifications ({NOTE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
        self.push(
            sql,
            vec![
                n.id.as_str().into(),
                n.group_key.clone().into(),
                n.channel.as_str().into(),
                n.purpose.as_str().into(),
                n.severity.as_str().into(),
                n.message.as_str().into(),
                n.status.as_str().into(),
                n.attempts.into(),
                n.created_at.into(),
                n.next_attempt_at.into(),
                n.sent_at.into(),
                n.last_error.clone().into(),
                n.backup.clone().into(),
                n.failover_of.clone().into(),
            ],
        );
    }

    pub fn update_notification(&mut self, n: &NotificationRecord) {
        self.push(
            "UPDATE notifications SET status = ?, attempts = ?, next_attempt_at = ?, sent_at = ?, last_error = ?, claim = NULL WHERE id = ?",
            vec![
                n.status.as_str().into(),
                n.attempts.into(),
                n.next_attempt_at.into(),
                n.sent_at.into(),
                n.last_error.clone().into(),
                n.id.as_str().into(),
            ],
        );
    }

    /// Replaces the stored message (after a partial delivery it names who is still owed it).
    pub fn set_notification_message(&mut self, id: &str, message: &str) {
        self.push("UPDATE notifications SET message = ? WHERE id = ?", vec![message.into(), id.into()]);
    }

    pub fn insert_delivery(&mut self, d: &DeliveryRecord) {
        self.push(
            "INSERT INTO deliveries (notification_id, channel, attempt, at, duration_ms, http_status, outcome, answer) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                d.notification_id.as_str().into(),
                d.channel.as_str().into(),
                d.attempt.into(),
                d.at.into(),
                d.duration_ms.into(),
                d.http_status.into(),
                d.outcome.as_str().into(),
                d.answer.clone().into(),
            ],
        );
    }
}

fn alert_args(a: &AlertRecord) -> Vec<Arg> {
    vec![
        a.id.as_str().into(),
        a.fingerprint.as_str().into(),
        a.flow.as_str().into(),
        a.node.as_str().into(),
        a.error_kind.as_str().into(),
        a.severity.as_str().into(),
        a.status.as_str().into(),
        a.labels.as_str().into(),
        a.count.into(),
        a.first_seen.into(),
        a.last_seen.into(),
        a.last_run_id.clone().into(),
        a.last_message.clone().into(),
        a.acked_at.into(),
        a.acked_by.clone().into(),
        a.escalated_at.into(),
        a.notified_at.into(),
        a.resolved_at.into(),
    ]
}

impl Store {
    pub fn alert_tx(&self) -> AlertTx {
        AlertTx { backend: self.backend(), stmts: Vec::new() }
    }

    /// Commits the changes together; returns once they are durable.
    pub async fn commit_alerts(&self, tx: AlertTx) -> anyhow::Result<()> {
        if tx.stmts.is_empty() {
            return Ok(());
        }
        self.write(tx.stmts).await
    }

    /// The alert of this fingerprint that is firing (or silenced), if any.
    pub async fn open_alert(&self, fingerprint: &str) -> anyhow::Result<Option<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLS} FROM alerts WHERE open_key = ?");
        Ok(self.pool().fetch(&sql, &[fingerprint.into()], ALERT_TYS).await?.into_iter().next().map(alert_from))
    }

    /// Alerts whose id or fingerprint starts with `prefix`.
    pub async fn find_alerts(&self, prefix: &str) -> anyhow::Result<Vec<AlertRecord>> {
        let p = format!("{}%", prefix.replace(['%', '_'], ""));
        let sql = format!("SELECT {ALERT_COLS} FROM alerts WHERE id LIKE ? OR fingerprint LIKE ? ORDER BY last_seen DESC LIMIT 20");
        Ok(self.pool().fetch(&sql, &[p.clone().into(), p.into()], ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    /// Newest first.
    pub async fn list_alerts(&self, f: &AlertFilter) -> anyhow::Result<Vec<AlertRecord>> {
        let mut sql = format!("SELECT {ALERT_COLS} FROM alerts WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        if let Some(s) = &f.status {
            sql.push_str(" AND status = ?");
            args.push(s.as_str().into());
        }
        if let Some(fl) = &f.flow {
            sql.push_str(" AND flow = ?");
            args.push(fl.as_str().into());
        }
        sql.push_str(" ORDER BY last_seen DESC, id DESC");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {}", l.max(0)));
        }
        Ok(self.pool().fetch(&sql, &args, ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    pub async fn firing_alerts_of_flow(&self, flow: &str) -> anyhow::Result<Vec<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLS} FROM alerts WHERE flow = ? AND status = 'firing'");
        Ok(self.pool().fetch(&sql, &[flow.into()], ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    /// The firing alerts of one node of a flow (any error kind).
    pub async fn firing_alerts_of_node(&self, flow: &str, node: &str) -> anyhow::Result<Vec<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLS} FROM alerts WHERE flow = ? AND node = ? AND status = 'firing'");
        Ok(self.pool().fetch(&sql, &[flow.into(), node.into()], ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    /// Alerts of any severity that were notified, are still firing, not acknowledged and not yet
    /// escalated (the routes decide which of them escalate, and when).
    pub async fn escalation_candidates(&self) -> anyhow::Result<Vec<AlertRecord>> {
        let sql = format!(
            "SELECT {ALERT_COLS} FROM alerts WHERE status = 'firing' AND acked_at IS NULL AND escalated_at IS NULL AND notified_at IS NOT NULL"
        );
        Ok(self.pool().fetch(&sql, &[], ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    pub async fn group(&self, key: &str) -> anyhow::Result<Option<GroupRecord>> {
        let sql = format!("SELECT {GROUP_COLS} FROM alert_groups WHERE group_key = ?");
        Ok(self.pool().fetch(&sql, &[key.into()], GROUP_TYS).await?.into_iter().next().map(group_from))
    }

    pub async fn due_groups(&self, now: i64) -> anyhow::Result<Vec<GroupRecord>> {
        let sql =
            format!("SELECT {GROUP_COLS} FROM alert_groups WHERE next_flush_at IS NOT NULL AND next_flush_at <= ? ORDER BY next_flush_at");
        Ok(self.pool().fetch(&sql, &[now.into()], GROUP_TYS).await?.into_iter().map(group_from).collect())
    }

    /// The earliest time a group is due, if any.
    pub async fn next_group_due(&self) -> anyhow::Result<Option<i64>> {
        let rows = self.pool().fetch("SELECT MIN(next_flush_at) FROM alert_groups", &[], &[Ty::I64]).await?;
        Ok(rows.into_iter().next().and_then(|r| r[0].i64()))
    }

    /// Groups an alert belongs to.
    pub async fn groups_of_alert(&self, alert_id: &str) -> anyhow::Result<Vec<GroupRecord>> {
        Ok(self.pool().fetch(&groups_of_alert_sql(), &[alert_id.into()], GROUP_TYS).await?.into_iter().map(group_from).collect())
    }

    /// The alerts of a group with one of these statuses.
    pub async fn group_alerts(&self, key: &str, statuses: &[&str]) -> anyhow::Result<Vec<AlertRecord>> {
        let (sql, args) = group_alerts_query(key, statuses);
        Ok(self.pool().fetch(&sql, &args, ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    /// Pending notifications due by `now`, oldest first.
    pub async fn due_notifications(&self, now: i64, limit: i64) -> anyhow::Result<Vec<NotificationRecord>> {
        let sql = format!(
            "SELECT {NOTE_COLS} FROM notifications WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at LIMIT {}",
            limit.max(1)
        );
        Ok(self.pool().fetch(&sql, &[now.into()], NOTE_TYS).await?.into_iter().map(note_from).collect())
    }

    /// The earliest time a pending notification is due, if any.
    pub async fn next_notification_due(&self) -> anyhow::Result<Option<i64>> {
        let rows = self.pool().fetch("SELECT MIN(next_attempt_at) FROM notifications WHERE status = 'pending'", &[], &[Ty::I64]).await?;
        Ok(rows.into_iter().next().and_then(|r| r[0].i64()))
    }

    /// Takes a due notification for one send: moves its due time to `lease_until` and writes
    /// `claim`, only if no other process did so first. Returns whether this process owns the send;
    /// its result is recorded only while the claim still holds ([`Tx::finish_send`]).
    pub async fn claim_notification(&self, id: &str, now: i64, lease_until: i64, claim: &str) -> anyhow::Result<bool> {
        let n = self
            .pool()
            .exec(
                "UPDATE notifications SET next_attempt_at = ?, claim = ? WHERE id = ? AND status = 'pending' AND next_attempt_at <= ?",
                &[lease_until.into(), claim.into(), id.into(), now.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Whether an older notification of the same group and channel is still pending: a group's
    /// messages go out in the order they were made (never a firing one after its resolved one).
    pub async fn older_pending_in_group(&self, n: &NotificationRecord) -> anyhow::Result<bool> {
        let Some(group) = &n.group_key else { return Ok(false) };
        let rows = self
            .pool()
            .fetch(
                "SELECT COUNT(*) FROM notifications WHERE group_key = ? AND channel = ? AND status = 'pending' AND (created_at < ? OR (created_at = ? AND id < ?))",
                &[group.as_str().into(), n.channel.as_str().into(), n.created_at.into(), n.created_at.into(), n.id.as_str().into()],
                &[Ty::I64],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].i64()).unwrap_or(0) > 0)
    }

    /// Gives a claimed notification back, due at `until` (the bot's window is full).
    pub async fn release_notification(&self, id: &str, claim: &str, until: i64) -> anyhow::Result<()> {
        self.pool()
            .exec(
                "UPDATE notifications SET next_attempt_at = ?, claim = NULL WHERE id = ? AND claim = ? AND status = 'pending'",
                &[until.into(), id.into(), claim.into()],
            )
            .await?;
        Ok(())
    }

    /// A dead notification back in the outbox as a new one (the dead one stays, as history).
    pub async fn insert_notification(&self, n: &NotificationRecord) -> anyhow::Result<()> {
        let mut tx = self.alert_tx();
        tx.insert_notification(n);
        self.commit_alerts(tx).await
    }

    /// A transaction for steps several processes decide on together (see [`Tx`]); run it
    /// through `transact!` in the alerting module, which runs it again when it lost to another.
    pub async fn begin(&self) -> anyhow::Result<Tx> {
        Ok(self.pool().begin().await?)
    }

    pub async fn find_notifications(&self, prefix: &str) -> anyhow::Result<Vec<NotificationRecord>> {
        let sql = format!("SELECT {NOTE_COLS} FROM notifications WHERE id LIKE ? ORDER BY created_at DESC LIMIT 5");
        Ok(self
            .pool()
            .fetch(&sql, &[format!("{}%", prefix.replace(['%', '_'], "")).into()], NOTE_TYS)
            .await?
            .into_iter()
            .map(note_from)
            .collect())
    }

    /// Newest first; `status` filters (`pending`, `sent`, `dead`).
    pub async fn list_notifications(&self, status: Option<&str>, limit: i64) -> anyhow::Result<Vec<NotificationRecord>> {
        let mut sql = format!("SELECT {NOTE_COLS} FROM notifications");
        let mut args: Vec<Arg> = Vec::new();
        if let Some(s) = status {
            sql.push_str(" WHERE status = ?");
            args.push(s.into());
        }
        sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {}", limit.max(0)));
        Ok(self.pool().fetch(&sql, &args, NOTE_TYS).await?.into_iter().map(note_from).collect())
    }

    /// (channel, status, count) of every notification ever stored, for `/metrics`.
    pub async fn notification_counts_by_channel(&self) -> anyhow::Result<Vec<(String, String, i64)>> {
        let rows = self
            .pool()
            .fetch("SELECT channel, status, COUNT(*) FROM notifications GROUP BY channel, status", &[], &[Ty::Str, Ty::Str, Ty::I64])
            .await?;
        Ok(rows.into_iter().map(|r| (r[0].str().unwrap_or_default(), r[1].str().unwrap_or_default(), r[2].i64().unwrap_or(0))).collect())
    }

    /// (status, count) of every notification ever stored.
    pub async fn notification_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = self.pool().fetch("SELECT status, COUNT(*) FROM notifications GROUP BY status", &[], &[Ty::Str, Ty::I64]).await?;
        Ok(rows.into_iter().map(|r| (r[0].str().unwrap_or_default(), r[1].i64().unwrap_or(0))).collect())
    }

    pub async fn deliveries(&self, notification_id: &str) -> anyhow::Result<Vec<DeliveryRecord>> {
        let rows = self
            .pool()
            .fetch(
                "SELECT notification_id, channel, attempt, at, duration_ms, http_status, outcome, answer FROM deliveries WHERE notification_id = ? ORDER BY id",
                &[notification_id.into()],
                &[Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64, Ty::I64, Ty::Str, Ty::Str],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeliveryRecord {
                notification_id: r[0].str().unwrap_or_default(),
                channel: r[1].str().unwrap_or_default(),
                attempt: r[2].i64().unwrap_or(0),
                at: r[3].i64().unwrap_or(0),
                duration_ms: r[4].i64().unwrap_or(0),
                http_status: r[5].i64(),
                outcome: r[6].str().unwrap_or_default(),
                answer: r[7].str(),
            })
            .collect())
    }

    pub async fn insert_silence(&self, s: &SilenceRecord) -> anyhow::Result<()> {
        self.write(vec![(
            Cow::Borrowed(
                "INSERT INTO silences (id, matchers, comment, created_by, created_at, ends_at, expired_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            ),
            vec![
                s.id.as_str().into(),
                s.matchers.as_str().into(),
                s.comment.clone().into(),
                s.created_by.clone().into(),
                s.created_at.into(),
                s.ends_at.into(),
                s.expired_at.into(),
            ],
        )])
        .await
    }

    /// Silences in force at `now` (or all, newest first, when `all`).
    pub async fn silences(&self, now: i64, all: bool) -> anyhow::Result<Vec<SilenceRecord>> {
        let mut sql = "SELECT id, matchers, comment, created_by, created_at, ends_at, expired_at FROM silences".to_string();
        let mut args: Vec<Arg> = Vec::new();
        if !all {
            sql.push_str(" WHERE expired_at IS NULL AND ends_at > ?");
            args.push(now.into());
        }
        sql.push_str(" ORDER BY created_at DESC");
        let rows = self.pool().fetch(&sql, &args, &[Ty::Str, Ty::Str, Ty::Str, Ty::Str, Ty::I64, Ty::I64, Ty::I64]).await?;
        Ok(rows
            .into_iter()
            .map(|r| SilenceRecord {
                id: r[0].str().unwrap_or_default(),
                matchers: r[1].str().unwrap_or_default(),
                comment: r[2].str(),
                created_by: r[3].str(),
                created_at: r[4].i64().unwrap_or(0),
                ends_at: r[5].i64().unwrap_or(0),
                expired_at: r[6].i64(),
            })
            .collect())
    }

    /// Ends silences whose id starts with `prefix`; returns how many.
    pub async fn expire_silence(&self, prefix: &str, now: i64) -> anyhow::Result<u64> {
        let p = format!("{}%", prefix.replace(['%', '_'], ""));
        Ok(self.pool().exec("UPDATE silences SET expired_at = ? WHERE id LIKE ? AND expired_at IS NULL", &[now.into(), p.into()]).await?)
    }
}

impl Store {
    /// Runs that ended in a state that alerts (DESIGN.md §4) in [since_ms, until_ms) but have no alert
    /// occurrence: their process died between recording the end and recording the alert, or the
    /// run was marked `interrupted` at a restart. A run whose flow has succeeded since is left out:
    /// the later resolution wins. Oldest first.
    pub async fn runs_missing_alerts(&self, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<super::RunRecord>> {
        let sql = format!(
            "SELECT {} FROM runs WHERE ended_at >= ? AND ended_at < ? AND status IN ('failed', 'timed_out', 'waiting_manual', 'refused', 'interrupted') \
             AND NOT EXISTS (SELECT 1 FROM alert_occurrences o WHERE o.run_id = runs.id) \
             AND NOT EXISTS (SELECT 1 FROM runs later WHERE later.flow = runs.flow AND later.status IN ('succeeded', 'recovered') AND later.ended_at > runs.ended_at) \
             ORDER BY ended_at LIMIT 1000",
            super::RUN_COLS
        );
        Ok(self.pool.fetch(&sql, &[since_ms.into(), until_ms.into()], super::RUN_TYS).await?.into_iter().map(super::run_from).collect())
    }
}

/// The severity order, in SQL, of a severity expression.
fn rank_sql(col: &str) -> String {
    format!("(CASE {col} WHEN 'high' THEN 2 WHEN 'medium' THEN 1 ELSE 0 END)")
}

/// Steps of alerting that several processes decide on together; each runs inside
/// [`Store::transact`].
/// Groups an alert belongs to (read on the pool or inside a transaction).
fn groups_of_alert_sql() -> String {
    let cols = GROUP_COLS.split(", ").map(|c| format!("g.{c}")).collect::<Vec<_>>().join(", ");
    format!("SELECT {cols} FROM alert_groups g JOIN alert_group_members m ON m.group_key = g.group_key WHERE m.alert_id = ?")
}

/// The alerts of a group with one of these statuses, oldest first, and the values to bind.
fn group_alerts_query(key: &str, statuses: &[&str]) -> (String, Vec<Arg>) {
    let cols = ALERT_COLS.split(", ").map(|c| format!("a.{c}")).collect::<Vec<_>>().join(", ");
    let marks = vec!["?"; statuses.len().max(1)].join(", ");
    let sql = format!(
        "SELECT {cols} FROM alerts a JOIN alert_group_members m ON m.alert_id = a.id WHERE m.group_key = ? AND a.status IN ({marks}) ORDER BY a.first_seen"
    );
    let mut args: Vec<Arg> = vec![key.into()];
    args.extend(statuses.iter().map(|s| Arg::from(*s)));
    if statuses.is_empty() {
        args.push("".into());
    }
    (sql, args)
}

impl Tx {
    /// Runs composed statements in order, inside this transaction.
    pub async fn run(&mut self, a: AlertTx) -> anyhow::Result<()> {
        for (sql, args) in a.stmts {
            self.exec(&sql, &args).await?;
        }
        Ok(())
    }

    /// Records one occurrence of `a`'s fingerprint: inserts the open alert, or adds one to the
    /// count of the one that is open (`count = count + 1` in the database, never read-then-write;
    /// the unique `open_key` makes one open alert per fingerprint). Returns the alert as stored.
    pub async fn upsert_open_alert(&mut self, a: &AlertRecord) -> anyhow::Result<AlertRecord> {
        let marks = vec!["?"; 19].join(", ");
        let sql = match self.backend() {
            Backend::MySql => format!(
                "INSERT INTO alerts ({ALERT_COLS}, open_key) VALUES ({marks}) ON DUPLICATE KEY UPDATE \
                 severity = CASE WHEN {} > {} THEN VALUES(severity) ELSE severity END, count = count + 1, \
                 status = VALUES(status), labels = VALUES(labels), last_seen = GREATEST(last_seen, VALUES(last_seen)), \
                 last_run_id = VALUES(last_run_id), last_message = VALUES(last_message)",
                rank_sql("VALUES(severity)"),
                rank_sql("severity")
            ),
            _ => format!(
                "INSERT INTO alerts ({ALERT_COLS}, open_key) VALUES ({marks}) ON CONFLICT (open_key) DO UPDATE SET \
                 severity = CASE WHEN {} > {} THEN excluded.severity ELSE alerts.severity END, count = alerts.count + 1, \
                 status = excluded.status, labels = excluded.labels, last_seen = MAX_FN(alerts.last_seen, excluded.last_seen), \
                 last_run_id = excluded.last_run_id, last_message = excluded.last_message",
                rank_sql("excluded.severity"),
                rank_sql("alerts.severity")
            )
            .replace("MAX_FN", if self.backend() == Backend::Postgres { "GREATEST" } else { "MAX" }),
        };
        let mut args = alert_args(a);
        args.push(a.fingerprint.as_str().into());
        self.exec(&sql, &args).await?;
        let sql = format!("SELECT {ALERT_COLS} FROM alerts WHERE open_key = ?");
        let rows = self.fetch(&sql, &[a.fingerprint.as_str().into()], ALERT_TYS).await?;
        rows.into_iter().next().map(alert_from).ok_or_else(|| anyhow::anyhow!("the open alert of {} vanished", a.fingerprint))
    }

    /// Whether the outcome of run `run_id` needs no alert (any more): one was already recorded
    /// for this ending of the run (by another process's sweep, say), or the flow has succeeded
    /// since (a later resolution wins over an older failure). Locks the run's row, so two
    /// processes raising for the same run decide one after the other. A run not in the database
    /// (an external or test input) needs its alert.
    pub async fn outcome_settled(&mut self, run_id: &str) -> anyhow::Result<bool> {
        let sql = format!("SELECT flow, ended_at FROM runs WHERE id = ?{}", self.for_update());
        let Some(r) = self.fetch(&sql, &[run_id.into()], &[Ty::Str, Ty::I64]).await?.into_iter().next() else {
            return Ok(false);
        };
        let (Some(flow), Some(ended)) = (r[0].str(), r[1].i64()) else { return Ok(false) };
        let sql = "SELECT COUNT(*) FROM alert_occurrences WHERE run_id = ? AND status IN ('firing', 'silenced') AND at >= ?";
        let told = self.fetch(sql, &[run_id.into(), ended.into()], &[Ty::I64]).await?.first().and_then(|r| r[0].i64()).unwrap_or(0);
        if told > 0 {
            return Ok(true);
        }
        let sql = "SELECT COUNT(*) FROM runs WHERE flow = ? AND status IN ('succeeded', 'recovered') AND ended_at > ?";
        let later = self.fetch(sql, &[flow.into(), ended.into()], &[Ty::I64]).await?.first().and_then(|r| r[0].i64()).unwrap_or(0);
        Ok(later > 0)
    }

    /// The group's row, created if new, locked until the transaction ends: one process at a time
    /// decides the group's next message.
    pub async fn lock_group(&mut self, g: &GroupRecord) -> anyhow::Result<GroupRecord> {
        let skip = match self.backend() {
            Backend::MySql => " ON DUPLICATE KEY UPDATE group_key = group_key",
            _ => " ON CONFLICT DO NOTHING",
        };
        let sql = format!("INSERT INTO alert_groups ({GROUP_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?){skip}");
        let args: Vec<Arg> = vec![
            g.group_key.as_str().into(),
            g.route.into(),
            g.channel.as_str().into(),
            g.labels.as_str().into(),
            g.created_at.into(),
            g.dirty_since.into(),
            g.last_sent_at.into(),
            g.next_flush_at.into(),
        ];
        self.exec(&sql, &args).await?;
        self.group_locked(&g.group_key).await?.ok_or_else(|| anyhow::anyhow!("alert group {} vanished", g.group_key))
    }

    /// An existing group's row, locked until the transaction ends.
    pub async fn group_locked(&mut self, key: &str) -> anyhow::Result<Option<GroupRecord>> {
        let sql = format!("SELECT {GROUP_COLS} FROM alert_groups WHERE group_key = ?{}", self.for_update());
        Ok(self.fetch(&sql, &[key.into()], GROUP_TYS).await?.into_iter().next().map(group_from))
    }

    /// The alerts of a group with one of these statuses, as committed now.
    pub async fn group_alerts(&mut self, key: &str, statuses: &[&str]) -> anyhow::Result<Vec<AlertRecord>> {
        let (sql, args) = group_alerts_query(key, statuses);
        Ok(self.fetch(&sql, &args, ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    /// The firing alerts of a flow, locked until the transaction ends.
    pub async fn firing_alerts_of_flow(&mut self, flow: &str) -> anyhow::Result<Vec<AlertRecord>> {
        let sql = format!("SELECT {ALERT_COLS} FROM alerts WHERE flow = ? AND status = 'firing' ORDER BY id{}", self.for_update());
        Ok(self.fetch(&sql, &[flow.into()], ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    /// The firing alerts of one node of a flow, locked until the transaction ends.
    pub async fn firing_alerts_of_node(&mut self, flow: &str, node: &str) -> anyhow::Result<Vec<AlertRecord>> {
        let sql =
            format!("SELECT {ALERT_COLS} FROM alerts WHERE flow = ? AND node = ? AND status = 'firing' ORDER BY id{}", self.for_update());
        Ok(self.fetch(&sql, &[flow.into(), node.into()], ALERT_TYS).await?.into_iter().map(alert_from).collect())
    }

    /// Groups an alert belongs to.
    pub async fn groups_of_alert(&mut self, alert_id: &str) -> anyhow::Result<Vec<GroupRecord>> {
        Ok(self.fetch(&groups_of_alert_sql(), &[alert_id.into()], GROUP_TYS).await?.into_iter().map(group_from).collect())
    }

    /// The alert is resolved (its fingerprint may open a new one). False when another process
    /// resolved it first.
    pub async fn resolve_alert(&mut self, id: &str, now: i64) -> anyhow::Result<bool> {
        let n = self
            .exec(
                "UPDATE alerts SET status = 'resolved', resolved_at = ?, open_key = NULL WHERE id = ? AND status = 'firing'",
                &[now.into(), id.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// A notification first carried the alert at `now` (kept if one did before).
    pub async fn mark_notified(&mut self, id: &str, now: i64) -> anyhow::Result<()> {
        self.exec("UPDATE alerts SET notified_at = ? WHERE id = ? AND notified_at IS NULL", &[now.into(), id.into()]).await?;
        Ok(())
    }

    /// Takes the alert's escalation: false when another process escalated (or someone
    /// acknowledged) it first.
    pub async fn claim_escalation(&mut self, id: &str, now: i64) -> anyhow::Result<bool> {
        let n = self
            .exec(
                "UPDATE alerts SET escalated_at = ? WHERE id = ? AND escalated_at IS NULL AND acked_at IS NULL AND status = 'firing'",
                &[now.into(), id.into()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Records the result of a send while the claim still holds; false (nothing recorded but the
    /// delivery) when the claim was lost, e.g. its lease ran out and another process took over.
    pub async fn finish_send(&mut self, n: &NotificationRecord, claim: &str) -> anyhow::Result<bool> {
        let done = self
            .exec(
                "UPDATE notifications SET status = ?, attempts = ?, next_attempt_at = ?, sent_at = ?, last_error = ?, claim = NULL WHERE id = ? AND claim = ?",
                &[
                    n.status.as_str().into(),
                    n.attempts.into(),
                    n.next_attempt_at.into(),
                    n.sent_at.into(),
                    n.last_error.clone().into(),
                    n.id.as_str().into(),
                    claim.into(),
                ],
            )
            .await?;
        Ok(done == 1)
    }

    /// The channel's rate-window row, created if new and locked until the transaction ends;
    /// returns until when the service asked us to wait.
    pub async fn lock_channel(&mut self, channel: &str) -> anyhow::Result<i64> {
        let skip = match self.backend() {
            Backend::MySql => " ON DUPLICATE KEY UPDATE channel = channel",
            _ => " ON CONFLICT DO NOTHING",
        };
        self.exec(&format!("INSERT INTO channel_blocks (channel, blocked_until) VALUES (?, 0){skip}"), &[channel.into()]).await?;
        let sql = format!("SELECT blocked_until FROM channel_blocks WHERE channel = ?{}", self.for_update());
        Ok(self.fetch(&sql, &[channel.into()], &[Ty::I64]).await?.first().and_then(|r| r[0].i64()).unwrap_or(0))
    }

    /// Times of the channel's sends after `since` (older ones are forgotten).
    pub async fn channel_sends(&mut self, channel: &str, since: i64) -> anyhow::Result<Vec<i64>> {
        self.exec("DELETE FROM channel_sends WHERE channel = ? AND at <= ?", &[channel.into(), since.into()]).await?;
        let rows =
            self.fetch("SELECT at FROM channel_sends WHERE channel = ? AND at > ?", &[channel.into(), since.into()], &[Ty::I64]).await?;
        Ok(rows.into_iter().filter_map(|r| r[0].i64()).collect())
    }

    pub async fn add_channel_send(&mut self, slot: &str, channel: &str, at: i64) -> anyhow::Result<()> {
        self.exec("INSERT INTO channel_sends (slot, channel, at) VALUES (?, ?, ?)", &[slot.into(), channel.into(), at.into()]).await?;
        Ok(())
    }
}

impl Store {
    /// A send taken at its slot's time finished at `done`: the window counts from `done`, because
    /// the service saw the request somewhere in between and counts from its own arrival time.
    pub async fn channel_send_finished(&self, slot: &str, done: i64) -> anyhow::Result<()> {
        self.pool().exec("UPDATE channel_sends SET at = ? WHERE slot = ? AND at < ?", &[done.into(), slot.into(), done.into()]).await?;
        Ok(())
    }

    /// The service said to slow down: no process sends on this channel before `until`.
    pub async fn block_channel(&self, channel: &str, until: i64) -> anyhow::Result<()> {
        self.pool()
            .exec(
                "UPDATE channel_blocks SET blocked_until = ? WHERE channel = ? AND blocked_until < ?",
                &[until.into(), channel.into(), until.into()],
            )
            .await?;
        Ok(())
    }
}
