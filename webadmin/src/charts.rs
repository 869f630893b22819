//! The 24 h queue charts (depth, oldest item's age), drawn on the server as SVG (no script, no external library).

use std::collections::BTreeMap;

use maud::{Markup, html};

use crate::db::Sample;

const W: f64 = 560.0;
const H: f64 = 160.0;
const PAD: f64 = 30.0;
const COLOURS: &[&str] = &[
    "#00607a", "#b3261e", "#1e7a34", "#7a4f00", "#5b2a86", "#3d5a80",
];

/// Items waiting per flow.
pub fn depth_chart(samples: &[Sample], now: i64) -> Markup {
    chart(samples, now, |s| s.depth, "")
}

/// Age of the oldest waiting item per flow, in minutes.
pub fn oldest_chart(samples: &[Sample], now: i64) -> Markup {
    chart(samples, now, |s| s.oldest_secs / 60, " min")
}

#[allow(clippy::cast_precision_loss, reason = "chart coordinates")]
fn chart(samples: &[Sample], now: i64, value: fn(&Sample) -> i64, unit: &str) -> Markup {
    let start = now - 86_400;
    let mut by_kind: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_kind.entry(s.kind.as_str()).or_default().push(s);
    }
    let max = samples.iter().map(value).max().unwrap_or(0).max(1) as f64;
    let x = |at: i64| PAD + (at - start).clamp(0, 86_400) as f64 / 86_400.0 * (W - 2.0 * PAD);
    let y = |d: i64| H - PAD + 10.0 - (d as f64 / max) * (H - 2.0 * PAD);
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (W) " " (H + 20.0) } role="img" aria-label="24 h" {
            line x1=(PAD) y1=(y(0)) x2=(W - PAD) y2=(y(0)) stroke="#8895a0" stroke-width="1" {}
            line x1=(PAD) y1=(y(0)) x2=(PAD) y2=(PAD - 10.0) stroke="#8895a0" stroke-width="1" {}
            text x=(PAD - 4.0) y=(PAD - 6.0) text-anchor="end" font-size="10" fill="#5b6670" { (max) (unit) }
            text x=(PAD - 4.0) y=(y(0)) text-anchor="end" font-size="10" fill="#5b6670" { "0" }
            text x=(PAD) y=(H + 4.0) font-size="10" fill="#5b6670" { "-24 h" }
            text x=(W - PAD) y=(H + 4.0) text-anchor="end" font-size="10" fill="#5b6670" { "0" }
            @for (i, (kind, points)) in by_kind.iter().enumerate() {
                @let colour = COLOURS[i % COLOURS.len()];
                polyline fill="none" stroke=(colour) stroke-width="2"
                    points=(points.iter().map(|s| format!("{:.1},{:.1}", x(s.at), y(value(s)))).collect::<Vec<_>>().join(" ")) {}
                text x=(W - PAD + 2.0 - 120.0) y=(PAD + 12.0 * i as f64) font-size="10" fill=(colour) { (kind) }
            }
        }
    }
}
