//! The dashboard's charts, drawn on the server as SVG (no script, no library): runs over time,
//! shares as horizontal bars, and the waterfall of a run's node attempts.

use std::fmt::Write;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// One slot of the runs chart.
pub struct Slot {
    pub label: String,
    pub ok: i64,
    pub failed: i64,
    pub waiting: i64,
}

/// Runs per slot as stacked bars (succeeded or recovered, failed, waiting for a human), with the
/// success rate as a line over them.
pub fn runs(slots: &[Slot], title: &str) -> String {
    let (w, h, left, bottom) = (720.0, 200.0, 36.0, 22.0);
    let max = slots.iter().map(|s| s.ok + s.failed + s.waiting).max().unwrap_or(0).max(1) as f64;
    let n = slots.len().max(1) as f64;
    let step = (w - left) / n;
    let bar = (step * 0.7).max(1.0);
    let y = |v: f64| (h - bottom) - v / max * (h - bottom - 10.0);
    let mut out =
        format!(r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#, esc(title), esc(title));
    let _ = write!(
        out,
        r#"<text class="axis" x="0" y="12">{}</text><line class="grid" x1="{left}" x2="{w}" y1="{}" y2="{}"/>"#,
        max as i64,
        y(max),
        y(max)
    );
    let _ = write!(out, r#"<line class="grid" x1="{left}" x2="{w}" y1="{0}" y2="{0}"/>"#, y(0.0));
    let mut line = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        let x = left + i as f64 * step + (step - bar) / 2.0;
        let mut base = 0.0;
        for (v, class) in [(s.ok, "ok"), (s.failed, "bad"), (s.waiting, "wait")] {
            if v > 0 {
                let (top, bot) = (y(base + v as f64), y(base));
                let _ = write!(
                    out,
                    r#"<rect class="{class}" x="{x:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}"><title>{} {class} {v}</title></rect>"#,
                    (bot - top).max(0.5),
                    esc(&s.label)
                );
                base += v as f64;
            }
        }
        let total = s.ok + s.failed + s.waiting;
        if total > 0 {
            let rate = s.ok as f64 / total as f64;
            line.push(format!("{:.1},{:.1}", x + bar / 2.0, (h - bottom) - rate * (h - bottom - 10.0)));
        }
        let every = (slots.len() / 8).max(1);
        if i % every == 0 {
            let _ = write!(out, r#"<text class="axis" x="{:.1}" y="{}">{}</text>"#, x, h - 6.0, esc(&s.label));
        }
    }
    if line.len() > 1 {
        let _ = write!(out, r#"<polyline class="rate" points="{}"/>"#, line.join(" "));
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars of shares in `0..=1`, each labelled, with its text at the end.
pub fn shares(items: &[(String, f64, String)], title: &str) -> String {
    let (w, row) = (720.0, 22.0);
    let h = row * items.len().max(1) as f64 + 4.0;
    let (left, right) = (180.0, 90.0);
    let mut out =
        format!(r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#, esc(title), esc(title));
    for (i, (label, share, text)) in items.iter().enumerate() {
        let y = i as f64 * row + 4.0;
        let len = (w - left - right) * share.clamp(0.0, 1.0);
        let _ = write!(
            out,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect class="share" x="{left}" y="{y:.1}" width="{len:.1}" height="{:.1}"/><text class="label" x="{:.1}" y="{:.1}">{}</text>"#,
            left - 6.0,
            y + 14.0,
            esc(label),
            row - 6.0,
            left + len + 6.0,
            y + 14.0,
            esc(text)
        );
    }
    out.push_str("</svg>");
    out
}

/// One bar of the waterfall.
pub struct Step {
    pub label: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// succeeded, failed, timed_out, skipped, defaulted.
    pub status: String,
    /// What it says on hover: status, error kind, action, model.
    pub note: String,
}

/// The waterfall of a run: each attempt a bar from its start to its end, against the run's time.
pub fn waterfall(steps: &[Step], start_ms: i64, end_ms: i64, title: &str) -> String {
    let (w, row, left) = (720.0, 20.0, 200.0);
    let h = row * steps.len().max(1) as f64 + 20.0;
    let span = (end_ms - start_ms).max(1) as f64;
    let x = |t: i64| left + ((t - start_ms) as f64 / span).clamp(0.0, 1.0) * (w - left - 10.0);
    let mut out =
        format!(r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#, esc(title), esc(title));
    for (i, s) in steps.iter().enumerate() {
        let y = i as f64 * row + 2.0;
        let (a, b) = (x(s.start_ms), x(s.end_ms.max(s.start_ms)));
        let class = match s.status.as_str() {
            "succeeded" => "ok",
            "defaulted" | "skipped" => "wait",
            _ => "bad",
        };
        let _ = write!(
            out,
            r#"<text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect class="{class}" x="{a:.1}" y="{y:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect>"#,
            left - 6.0,
            y + 13.0,
            esc(&s.label),
            (b - a).max(2.0),
            row - 5.0,
            esc(&s.note)
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="{left}" y="{:.1}">0</text><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
        h - 4.0,
        w - 10.0,
        h - 4.0,
        esc(&crate::human::ms(Some(end_ms - start_ms)))
    );
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_bars_scale_to_the_largest_slot() {
        let slots = [Slot { label: "<b>".into(), ok: 3, failed: 1, waiting: 0 }, Slot { label: "x".into(), ok: 0, failed: 0, waiting: 0 }];
        let svg = runs(&slots, "runs & rate");
        assert!(svg.contains("&lt;b&gt;") && !svg.contains("<b>"), "{svg}");
        assert!(svg.contains("runs &amp; rate"));
        assert!(svg.contains(r#">4</text>"#), "the axis shows the largest slot: {svg}");
        let w = waterfall(
            &[Step { label: "a #1".into(), start_ms: 10, end_ms: 20, status: "failed".into(), note: "timeout".into() }],
            10,
            30,
            "t",
        );
        assert!(w.contains(r#"class="bad""#) && w.contains("20ms"), "{w}");
    }
}
