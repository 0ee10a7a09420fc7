//! The run queue and the things that must happen once across processes. Triggers insert `queued`
//! runs; workers claim them (`FOR UPDATE SKIP LOCKED` on MySQL/MariaDB and PostgreSQL, SQLite's
//! write lock otherwise) and take the lease in the same transaction, counting the flow's leased
//! running runs there, so `concurrency:` and `overlap: queue` hold across all workers. Cron fires
//! are once per job and scheduled time (a unique key); process locks are lease rows (one `serve`
//! per SQLite file).

use super::leases::{owner, wall_ms};
use super::{Arg, Backend, RUN_COLS, RUN_TYS, RunRecord, Store, Ty, run_args, run_from};
use crate::vocab::RunStatus;
use std::collections::BTreeMap;

/// Where a queued run's whole inputs are kept among its kept outputs (no node id starts with `$`).
const QUEUED_INPUTS: &str = "$inputs";

/// A queued run this process claimed: it now holds the run's lease at `epoch`.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run: RunRecord,
    pub epoch: i64,
    /// The inputs it was given, whole (see [`Store::enqueue`]).
    pub inputs: Option<String>,
    /// Its flow was blocked when it was claimed (the engine reads the block and refuses the run).
    pub blocked: bool,
}

/// Read with each claimed run, after its columns and epoch: its whole inputs (bound to
/// [`QUEUED_INPUTS`]) and whether its flow is blocked, so the worker needs no further read.
const EXTRAS: &str = "(SELECT output FROM run_outputs o WHERE o.run_id = runs.id AND o.node_id = ?), \
     (SELECT COUNT(*) FROM flow_blocks b WHERE b.flow = runs.flow)";

fn claim_tys() -> Vec<Ty> {
    let mut tys = RUN_TYS.to_vec();
    tys.extend([Ty::I64, Ty::Str, Ty::I64]);
    tys
}

/// A row of [`RUN_COLS`], epoch and [`EXTRAS`].
fn claimed_from(mut row: Vec<super::Val>) -> Claimed {
    let blocked = row.pop().and_then(|v| v.i64()).unwrap_or(0) > 0;
    let inputs = row.pop().and_then(|v| v.str());
    let epoch = row.pop().and_then(|v| v.i64()).unwrap_or(0);
    Claimed { run: run_from(row), epoch, inputs, blocked }
}

/// Who holds a process lock.
#[derive(Debug, Clone)]
pub struct Holder {
    pub owner: String,
    pub since: i64,
}

impl Holder {
    /// `host H, pid P, since T`.
    pub fn describe(&self) -> String {
        let mut parts = self.owner.rsplitn(3, ':');
        let _random = parts.next();
        let pid = parts.next().unwrap_or("?");
        let host = parts.next().unwrap_or("?");
        let since = jiff::Timestamp::from_millisecond(self.since).map(|t| t.to_string()).unwrap_or_default();
        format!("host {host}, pid {pid}, since {since}")
    }

    /// The holder is a process of this host that no longer exists (it cannot renew any more).
    fn gone_here(&self) -> bool {
        let mut parts = self.owner.rsplitn(3, ':');
        let _random = parts.next();
        let (Some(pid), Some(host)) = (parts.next(), parts.next()) else { return false };
        let me = owner();
        let my_host = me.rsplitn(3, ':').nth(2).unwrap_or("");
        host == my_host && pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }
}

impl Store {
    /// Inserts a run to be executed by whichever worker claims it. `serial`: it starts only when
    /// no other run of its flow (canary or not alike) is running (`overlap: queue`).
    /// `inputs`: the run's inputs whole, kept beside it (the row's copy is cut at the size limit).
    pub async fn enqueue(&self, r: &RunRecord, serial: bool, inputs: &str) -> anyhow::Result<()> {
        self.write(self.enqueue_stmts(r, serial, inputs)).await
    }

    /// Records a scheduler fire and queues its run ([`Store::enqueue`]) in one transaction: a
    /// fire is never recorded without its run, as two writes would leave it if the process died
    /// between them (no process would run it then). True for the one process that records it;
    /// the others saw the fire too, and their write changes nothing.
    pub async fn enqueue_fire(&self, job: &str, at_ms: i64, r: &RunRecord, serial: bool, inputs: &str) -> anyhow::Result<bool> {
        let fire = self.fire_stmt(job, at_ms, false);
        let run = self.enqueue_stmts(r, serial, inputs);
        // On a connection of its own, not the writer: whether the fire's row went in decides
        // whether the run is written, and the writer answers no row counts.
        self.pool
            .with_tx(async |c| {
                if c.exec(&fire.0, &fire.1).await? == 0 {
                    return Ok(false);
                }
                for (sql, args) in &run {
                    c.exec(sql, args).await?;
                }
                Ok(true)
            })
            .await
    }

    fn enqueue_stmts(&self, r: &RunRecord, serial: bool, inputs: &str) -> Vec<super::db::Stmt> {
        let mut r = r.clone();
        r.status = RunStatus::Queued;
        let sql = format!(
            "INSERT INTO runs ({RUN_COLS}, serial) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?){}",
            self.on_conflict_skip("id")
        );
        let mut args = run_args(&r);
        args.push((serial as i64).into());
        let keep = super::manual::output_stmt(self.backend(), &r.id, QUEUED_INPUTS, inputs);
        vec![(sql.into(), args), keep]
    }

    /// Queued or running runs of a flow (canary or not), for `overlap: skip`.
    pub async fn pending_runs(&self, flow: &str, canary: bool) -> anyhow::Result<i64> {
        let rows = self
            .pool
            .fetch(
                "SELECT COUNT(*) FROM runs WHERE flow = ? AND canary = ? AND (status = 'queued' OR (status = 'running' AND lease_until >= ?))",
                &[flow.into(), (canary as i64).into(), wall_ms().into()],
                &[Ty::I64],
            )
            .await?;
        Ok(rows.first().and_then(|r| r[0].i64()).unwrap_or(0))
    }

    /// Claims up to `max` queued runs, oldest first, within each flow's limits; this process holds
    /// the lease of each one returned. `caps`: each flow's `concurrency:` (flows without one are
    /// not listed).
    pub async fn claim_queued(&self, max: usize, caps: &BTreeMap<String, usize>) -> anyhow::Result<Vec<Claimed>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut claimed = Vec::new();
        if self.backend() == Backend::Postgres {
            claimed = self.claim_at_once(max, caps).await?;
        }
        // What the one-statement claim left: fewer runs queued than asked for, or among the oldest
        // ones some of a capped flow or of `overlap: queue`, which are counted in a transaction.
        if claimed.len() < max {
            claimed.extend(self.claim_counted(max - claimed.len(), caps).await?);
        }
        for c in &claimed {
            self.hold(&c.run.id, c.epoch);
            // A queued run was never counted nor run (a run taken over goes on by resuming): its
            // end's rollups need nothing read back.
            self.live.start(&c.run);
        }
        Ok(claimed)
    }

    /// PostgreSQL: the oldest `max` queued runs, those of them free of any limit taken in one
    /// statement (one round trip, its own transaction), with their inputs and block flag.
    async fn claim_at_once(&self, max: usize, caps: &BTreeMap<String, usize>) -> anyhow::Result<Vec<Claimed>> {
        let now = wall_ms();
        let lease_until = now + self.lease.length.as_millis() as i64;
        let capped = if caps.is_empty() { String::new() } else { format!(" AND flow NOT IN ({})", vec!["?"; caps.len()].join(", ")) };
        // The pick is a materialized CTE: as a subquery of the UPDATE, PostgreSQL may run it
        // again under concurrent claims, and with SKIP LOCKED each run picks other rows, so one
        // claim could take more than `max`.
        let sql = format!(
            "WITH picked AS MATERIALIZED (SELECT id FROM runs WHERE status = 'queued' ORDER BY started_at, id LIMIT {max} FOR UPDATE SKIP LOCKED) \
             UPDATE runs SET status = 'running', owner = ?, lease_until = ?, epoch = epoch + 1, started_at = ? \
             WHERE id IN (TABLE picked) AND serial = 0{capped} RETURNING {RUN_COLS}, epoch, {EXTRAS}"
        );
        let mut args: Vec<Arg> = vec![owner().into(), lease_until.into(), now.into()];
        args.extend(caps.keys().map(|f| Arg::from(f.as_str())));
        args.push(QUEUED_INPUTS.into());
        let rows = self.pool.fetch(&sql, &args, &claim_tys()).await?;
        let mut out: Vec<Claimed> = rows.into_iter().map(claimed_from).collect();
        out.sort_by(|a, b| (a.run.started_at, &a.run.id).cmp(&(b.run.started_at, &b.run.id)));
        Ok(out)
    }

    /// The general claim: a transaction that locks the oldest queued runs and counts each capped
    /// or serial flow's running runs before taking one.
    async fn claim_counted(&self, max: usize, caps: &BTreeMap<String, usize>) -> anyhow::Result<Vec<Claimed>> {
        let backend = self.backend();
        let now = wall_ms();
        let lease_until = now + self.lease.length.as_millis() as i64;
        let me = owner();
        self.pool
            .with_tx(async |c| {
                let lock = if backend == Backend::Sqlite { "" } else { " FOR UPDATE SKIP LOCKED" };
                // On MySQL/MariaDB (REPEATABLE READ) the extras' plain reads would fix the
                // transaction's snapshot before the flow locks are taken, and the counts below
                // would then miss runs another worker claimed meanwhile: they are read last there.
                let (extras, args): (&str, Vec<Arg>) = match backend {
                    Backend::MySql => ("CAST(NULL AS CHAR), 0", vec![]),
                    _ => (EXTRAS, vec![QUEUED_INPUTS.into()]),
                };
                let sql = format!(
                    "SELECT {RUN_COLS}, epoch, {extras}, serial FROM runs WHERE status = 'queued' ORDER BY started_at, id LIMIT {}{lock}",
                    max * 2
                );
                let mut tys = claim_tys();
                tys.push(Ty::I64);
                let rows = c.fetch(&sql, &args, &tys).await?;
                let rows: Vec<(bool, Claimed)> = rows
                    .into_iter()
                    .map(|mut row| {
                        let serial = row.pop().and_then(|v| v.i64()).unwrap_or(0) != 0;
                        (serial, claimed_from(row))
                    })
                    .collect();
                if backend != Backend::Sqlite {
                    // One claimer per limited flow at a time, so two workers cannot both see a
                    // free slot; the flows' lock rows are taken in name order, so two claimers
                    // never wait on each other crosswise.
                    let mut limited: Vec<&str> =
                        rows.iter().filter(|(serial, c)| *serial || caps.contains_key(&c.run.flow)).map(|(_, c)| c.run.flow.as_str()).collect();
                    limited.sort_unstable();
                    limited.dedup();
                    for flow in limited {
                        let name = format!("flow:{flow}");
                        let insert = match backend {
                            Backend::MySql => {
                                "INSERT INTO process_locks (name, owner, since, lease_until) VALUES (?, '', 0, 0) ON DUPLICATE KEY UPDATE name = name"
                            }
                            _ => "INSERT INTO process_locks (name, owner, since, lease_until) VALUES (?, '', 0, 0) ON CONFLICT DO NOTHING",
                        };
                        c.exec(insert, &[name.as_str().into()]).await?;
                        c.fetch("SELECT name FROM process_locks WHERE name = ? FOR UPDATE", &[name.as_str().into()], &[Ty::Str]).await?;
                    }
                }
                let mut out = Vec::new();
                for (serial, Claimed { run, epoch, inputs, blocked }) in rows {
                    if out.len() >= max {
                        break;
                    }
                    let cap = caps.get(&run.flow).copied();
                    if cap.is_some() || serial {
                        let count = |canary: Option<bool>| {
                            let mut sql = "SELECT COUNT(*) FROM runs WHERE flow = ? AND status = 'running' AND lease_until >= ?".to_owned();
                            let mut args: Vec<Arg> = vec![run.flow.as_str().into(), now.into()];
                            if let Some(k) = canary {
                                sql.push_str(" AND canary = ?");
                                args.push((k as i64).into());
                            }
                            (sql, args)
                        };
                        if let Some(cap) = cap {
                            let (sql, args) = count(None);
                            let n = c.fetch(&sql, &args, &[Ty::I64]).await?.first().and_then(|r| r[0].i64()).unwrap_or(0);
                            if n as usize >= cap {
                                continue;
                            }
                        }
                        if serial {
                            let (sql, args) = count(Some(run.canary));
                            if c.fetch(&sql, &args, &[Ty::I64]).await?.first().and_then(|r| r[0].i64()).unwrap_or(0) > 0 {
                                continue;
                            }
                        }
                        // In order: an older queued run of the flow that another worker holds
                        // goes first (for `overlap: queue`, of its own kind, canary or not).
                        let mut sql = "SELECT COUNT(*) FROM runs WHERE flow = ? AND status = 'queued' AND (started_at < ? OR (started_at = ? AND id < ?))".to_owned();
                        let mut args: Vec<Arg> =
                            vec![run.flow.as_str().into(), run.started_at.into(), run.started_at.into(), run.id.as_str().into()];
                        if serial {
                            sql.push_str(" AND canary = ?");
                            args.push((run.canary as i64).into());
                        }
                        if c.fetch(&sql, &args, &[Ty::I64]).await?.first().and_then(|r| r[0].i64()).unwrap_or(0) > 0 {
                            continue;
                        }
                    }
                    let n = c
                        .exec(
                            "UPDATE runs SET status = 'running', owner = ?, lease_until = ?, epoch = ?, started_at = ? WHERE id = ? AND status = 'queued' AND epoch = ?",
                            &[me.into(), lease_until.into(), (epoch + 1).into(), now.into(), run.id.as_str().into(), epoch.into()],
                        )
                        .await?;
                    if n == 1 {
                        let run = RunRecord { status: RunStatus::Running, started_at: now, ..run };
                        out.push(Claimed { run, epoch: epoch + 1, inputs, blocked });
                    }
                }
                if backend == Backend::MySql && !out.is_empty() {
                    let marks = vec!["?"; out.len()].join(", ");
                    let sql = format!("SELECT id, {EXTRAS} FROM runs WHERE id IN ({marks})");
                    let mut args: Vec<Arg> = vec![QUEUED_INPUTS.into()];
                    args.extend(out.iter().map(|c| Arg::from(c.run.id.as_str())));
                    for row in c.fetch(&sql, &args, &[Ty::Str, Ty::Str, Ty::I64]).await? {
                        if let Some(c) = out.iter_mut().find(|c| Some(&c.run.id) == row[0].str().as_ref()) {
                            c.inputs = row[1].str();
                            c.blocked = row[2].i64().unwrap_or(0) > 0;
                        }
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Lets another process take a run over at once (a graceful stop of a run that resumes).
    pub async fn hand_back(&self, run_id: &str) -> anyhow::Result<()> {
        if let Some(fence) = self.fence(run_id) {
            self.pool.exec("UPDATE runs SET lease_until = 0 WHERE id = ? AND epoch = ?", &[run_id.into(), fence.epoch.into()]).await?;
        }
        self.release(run_id);
        Ok(())
    }

    /// Records a fire alone (its run is not queued: `overlap: skip`); true for exactly one caller
    /// per (job, scheduled time), across processes.
    pub async fn fire_once(&self, job: &str, at_ms: i64) -> anyhow::Result<bool> {
        let (sql, args) = self.fire_stmt(job, at_ms, false);
        Ok(self.pool.exec(&sql, &args).await? == 1)
    }

    /// Records a fire that fell due while the database was away and is not run; true for the one
    /// process that records it (the others saw it too).
    pub async fn skip_fire(&self, job: &str, at_ms: i64) -> anyhow::Result<bool> {
        let (sql, args) = self.fire_stmt(job, at_ms, true);
        Ok(self.pool.exec(&sql, &args).await? == 1)
    }

    /// The insert of a fire's row, which changes nothing when another process recorded it.
    fn fire_stmt(&self, job: &str, at_ms: i64, skipped: bool) -> super::db::Stmt {
        let sql = match self.backend() {
            Backend::MySql => "INSERT IGNORE INTO cron_fires (job, at_ms, fired_at, owner, skipped) VALUES (?, ?, ?, ?, ?)",
            _ => "INSERT INTO cron_fires (job, at_ms, fired_at, owner, skipped) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        };
        (sql.into(), vec![job.into(), at_ms.into(), wall_ms().into(), owner().into(), (skipped as i64).into()])
    }

    /// Scheduled times of `job` recorded as skipped, oldest first.
    pub async fn skipped_fires(&self, job: &str) -> anyhow::Result<Vec<i64>> {
        let rows =
            self.pool.fetch("SELECT at_ms FROM cron_fires WHERE job = ? AND skipped = 1 ORDER BY at_ms", &[job.into()], &[Ty::I64]).await?;
        Ok(rows.into_iter().filter_map(|r| r[0].i64()).collect())
    }

    /// Takes the process lock `name` (e.g. the one `serve` per SQLite file) for `lease` ms, or
    /// says who holds it. A holder whose lease expired, or a dead process of this host, loses it.
    pub async fn lock_process(&self, name: &str, lease_ms: i64) -> anyhow::Result<Result<(), Holder>> {
        let now = wall_ms();
        let me = owner();
        let insert = match self.backend() {
            Backend::MySql => "INSERT IGNORE INTO process_locks (name, owner, since, lease_until) VALUES (?, ?, ?, ?)",
            _ => "INSERT INTO process_locks (name, owner, since, lease_until) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        };
        if self.pool.exec(insert, &[name.into(), me.into(), now.into(), (now + lease_ms).into()]).await? == 1 {
            return Ok(Ok(()));
        }
        let rows = self
            .pool
            .fetch("SELECT owner, since, lease_until FROM process_locks WHERE name = ?", &[name.into()], &[Ty::Str, Ty::I64, Ty::I64])
            .await?;
        // Given back between the insert and this read: try again.
        let Some(row) = rows.into_iter().next() else { return Box::pin(self.lock_process(name, lease_ms)).await };
        let holder = Holder { owner: row[0].str().unwrap_or_default(), since: row[1].i64().unwrap_or(0) };
        let until = row[2].i64().unwrap_or(0);
        if until >= now && !holder.gone_here() {
            return Ok(Err(holder));
        }
        // Taken over only if nobody renewed or took it since we read it.
        let n = self
            .pool
            .exec(
                "UPDATE process_locks SET owner = ?, since = ?, lease_until = ? WHERE name = ? AND owner = ? AND lease_until = ?",
                &[me.into(), now.into(), (now + lease_ms).into(), name.into(), holder.owner.as_str().into(), until.into()],
            )
            .await?;
        if n == 1 { Ok(Ok(())) } else { Box::pin(self.lock_process(name, lease_ms)).await }
    }

    /// Renews a process lock this process holds; false when it lost it.
    pub async fn renew_process_lock(&self, name: &str, lease_ms: i64) -> anyhow::Result<bool> {
        let until = wall_ms() + lease_ms;
        Ok(self
            .pool
            .exec("UPDATE process_locks SET lease_until = ? WHERE name = ? AND owner = ?", &[until.into(), name.into(), owner().into()])
            .await?
            == 1)
    }

    pub async fn unlock_process(&self, name: &str) -> anyhow::Result<()> {
        self.pool.exec("DELETE FROM process_locks WHERE name = ? AND owner = ?", &[name.into(), owner().into()]).await?;
        Ok(())
    }
}
