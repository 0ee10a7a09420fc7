//! What the dashboard reads beyond the API: runs over time for its charts: the run rollups summed per 15-minute bucket and
//! status (canaries left out), so a chart costs the same at any history size.

use super::Store;
use super::db::{Arg, Backend, Ty};
use super::rollups::{BUCKET_MS, bucket_of};

impl Store {
    /// (bucket start in ms, run status, runs) for the buckets in `[since_ms, until_ms)` (the start
    /// rounded down, the end up), optionally of one flow; canary runs are left out.
    pub async fn run_series(&self, flow: Option<&str>, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<(i64, String, i64)>> {
        let (since, until) = (bucket_of(since_ms), bucket_of(until_ms + BUCKET_MS - 1));
        let mut args: Vec<Arg> = vec![since.into(), until.into()];
        let fw = match flow {
            Some(f) => {
                args.push(f.into());
                " AND flow = ?"
            }
            None => "",
        };
        let sum = match self.backend() {
            Backend::Sqlite => "SUM(runs)",
            Backend::MySql => "CAST(SUM(runs) AS SIGNED)",
            Backend::Postgres => "CAST(SUM(runs) AS BIGINT)",
        };
        let sql = format!(
            "SELECT bucket_ms, status, {sum} FROM rollup_runs WHERE bucket_ms >= ? AND bucket_ms < ? AND canary = 0{fw} GROUP BY bucket_ms, status"
        );
        let rows = self.pool.fetch(&sql, &args, &[Ty::I64, Ty::Str, Ty::I64]).await?;
        Ok(rows.into_iter().map(|r| (r[0].i64().unwrap_or(0), r[1].str().unwrap_or_default(), r[2].i64().unwrap_or(0))).collect())
    }
}
