//! `flowguard run` on the example flow, as a user runs it: peak memory of the process, and the time
//! from starting the process to its first node attempt starting (and being recorded).
//!
//! `cargo bench --bench startup` (env RUNS to change the number of repetitions).

use std::process::{Command, Stdio};
use std::time::Duration;

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn main() {
    let exe = env!("CARGO_BIN_EXE_flowguard");
    let runs: usize = std::env::var("RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let ok = Command::new(exe).current_dir(dir.path()).args(["init", "."]).stdout(Stdio::null()).status().expect("init");
    assert!(ok.success());
    let (mut peaks, mut to_start, mut to_recorded) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let spawned = now_ms();
        let mut child = Command::new(exe)
            .current_dir(dir.path())
            .args(["run", "douyin_script", "--format", "json"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("run");
        let pid = child.id();
        let mut peak = 0;
        loop {
            if let Some(kb) = vm_hwm_kb(pid) {
                peak = peak.max(kb);
            }
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let out = child.wait_with_output().expect("output");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run json");
        let id = v["run_id"].as_str().expect("run id").to_owned();
        let shown = Command::new(exe).current_dir(dir.path()).args(["show", &id, "--format", "json"]).output().expect("show");
        let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("show json");
        let first = &shown["attempts"][0];
        peaks.push(peak);
        to_start.push(first["started_at"].as_i64().unwrap_or(0) - spawned);
        to_recorded.push(first["ended_at"].as_i64().unwrap_or(0) - spawned);
    }
    let med = |v: &mut Vec<i64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut peaks_i: Vec<i64> = peaks.iter().map(|k| *k as i64).collect();
    println!(
        "startup: runs={runs} peak_rss_mb_median={:.1} peak_rss_mb_max={:.1}",
        med(&mut peaks_i) as f64 / 1024.0,
        *peaks.iter().max().unwrap_or(&0) as f64 / 1024.0
    );
    println!(
        "startup: process_start_to_first_attempt_ms_median={} to_first_attempt_recorded_ms_median={} (the first node waits ~30 ms on the simulated knowledge base)",
        med(&mut to_start),
        med(&mut to_recorded)
    );
}
