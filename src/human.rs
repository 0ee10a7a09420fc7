//! Numbers and times as people read them, shared by the CLI tables and the report renderers.

pub fn ms(v: Option<i64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 1000 => format!("{v}ms"),
        Some(v) if v < 60_000 => format!("{:.1}s", v as f64 / 1000.0),
        Some(v) => format!("{}m{:02}s", v / 60_000, (v % 60_000) / 1000),
    }
}

pub fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

pub fn time(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

pub fn bytes(n: i64) -> String {
    if n < 1024 {
        format!("{n}B")
    } else if n < 1024 * 1024 {
        format!("{:.1}KB", n as f64 / 1024.0)
    } else {
        format!("{:.1}MB", n as f64 / 1048576.0)
    }
}
