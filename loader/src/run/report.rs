//! What a run prints and writes: a Gatling-style table per request name, `results.json`
//! with every figure, and `index.html` with charts over time (active users, requests
//! per second, response-time percentiles, errors) and the table, self-contained.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::engine::{Recorder, Sample};
use crate::text;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub count: usize,
    pub ok: usize,
    pub ko: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    pub requests_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: u64,
    pub users: i64,
    pub requests: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn row(name: &str, samples: &[Sample], seconds: f64) -> Row {
    let mut l: Vec<u64> = samples.iter().map(|s| s.latency_us).collect();
    l.sort_unstable();
    let ok = samples.iter().filter(|s| s.ok).count();
    Row {
        name: name.to_owned(),
        count: samples.len(),
        ok,
        ko: samples.len() - ok,
        min_ms: l.first().map_or(0.0, |v| *v as f64 / 1000.0),
        p50_ms: quantile(&l, 0.5),
        p75_ms: quantile(&l, 0.75),
        p95_ms: quantile(&l, 0.95),
        p99_ms: quantile(&l, 0.99),
        max_ms: l.last().map_or(0.0, |v| *v as f64 / 1000.0),
        mean_ms: if l.is_empty() {
            0.0
        } else {
            l.iter().sum::<u64>() as f64 / l.len() as f64 / 1000.0
        },
        requests_per_second: samples.len() as f64 / seconds.max(1e-9),
    }
}

pub struct Report {
    pub rows: Vec<Row>,
    pub timeline: Vec<Second>,
}

/// The name of the row of every request: the one a run's success is read from.
pub const ALL: &str = "all requests";

/// The rows (one per request name, then [`ALL`], then, with `warmup`, every request
/// answered after the first `warmup` seconds) and the timeline.
pub fn build(recorder: &Recorder, seconds: f64, warmup: Option<f64>) -> Report {
    let by_name = recorder.by_name();
    let mut rows: Vec<Row> = by_name.iter().map(|(n, s)| row(n, s, seconds)).collect();
    let all: Vec<Sample> = by_name.values().flatten().copied().collect();
    rows.push(row(ALL, &all, seconds));
    if let Some(w) = warmup.filter(|w| *w > 0.0 && *w < seconds) {
        let steady: Vec<Sample> = all.iter().filter(|s| s.at >= w).copied().collect();
        rows.push(row(&format!("after the first {w} s"), &steady, seconds - w));
    }
    let users = recorder.users.lock().map(|u| u.clone()).unwrap_or_default();
    let mut buckets: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
    for s in &all {
        buckets.entry(s.at as u64).or_default().push(*s);
    }
    let last = buckets.keys().last().copied().unwrap_or(0);
    let timeline = (0..=last)
        .map(|second| {
            let samples = buckets.get(&second).cloned().unwrap_or_default();
            let mut l: Vec<u64> = samples.iter().map(|s| s.latency_us).collect();
            l.sort_unstable();
            let users = users
                .iter()
                .rev()
                .find(|(t, _)| *t <= second as f64 + 1.0)
                .map_or(0, |(_, u)| *u);
            Second {
                second,
                users,
                requests: samples.len(),
                errors: samples.iter().filter(|s| !s.ok).count(),
                p50_ms: quantile(&l, 0.5),
                p95_ms: quantile(&l, 0.95),
                p99_ms: quantile(&l, 0.99),
            }
        })
        .collect();
    Report { rows, timeline }
}

/// The terminal table; names are shown with their control characters escaped.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}\n",
        "request", "count", "OK", "KO", "min", "p50", "p75", "p95", "p99", "max", "mean", "req/s"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:>8} {:>8} {:>6} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>8.1}\n",
            text::visible(&r.name), r.count, r.ok, r.ko, r.min_ms, r.p50_ms, r.p75_ms, r.p95_ms, r.p99_ms, r.max_ms, r.mean_ms, r.requests_per_second
        ));
    }
    out.push_str("(times in ms)\n");
    out
}

/// A line of a chart: label, colour, and the value it plots for a second.
type Series<'a> = (&'a str, &'a str, fn(&Second) -> f64);

fn chart(title: &str, timeline: &[Second], series: &[Series<'_>]) -> String {
    let (w, h, pad) = (860.0, 200.0, 40.0);
    let max_x = timeline.len().max(2) as f64 - 1.0;
    let max_y = timeline
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, f)| f(s)))
        .fold(1e-9, f64::max);
    let mut svg = format!(
        "<figure><figcaption>{title} (max {max_y:.1})</figcaption><svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>",
        h - pad,
        w - 10.0,
        h - pad
    );
    for (label, color, f) in series {
        let points: Vec<String> = timeline
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{:.1},{:.1}",
                    pad + i as f64 / max_x * (w - pad - 10.0),
                    h - pad - f(s) / max_y * (h - pad - 10.0)
                )
            })
            .collect();
        svg.push_str(&format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{label}</title></polyline>", points.join(" ")));
    }
    let legend: Vec<String> = series
        .iter()
        .map(|(l, c, _)| format!("<span style=\"color:{c}\">{l}</span>"))
        .collect();
    svg.push_str(&format!("</svg><div>{}</div></figure>", legend.join(" · ")));
    svg
}

/// Writes `results.json` and `index.html`; every name in the HTML is escaped.
pub fn write(dir: &Path, scenario: &str, report: &Report, seconds: f64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({"scenario": scenario, "seconds": seconds, "requests": report.rows, "timeline": report.timeline});
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let t = &report.timeline;
    let charts = [
        chart(
            "Active users",
            t,
            &[("users", "#1d4ed8", |s| s.users as f64)],
        ),
        chart(
            "Requests per second",
            t,
            &[("requests", "#15803d", |s| s.requests as f64)],
        ),
        chart(
            "Response time percentiles (ms)",
            t,
            &[
                ("p50", "#1d4ed8", |s| s.p50_ms),
                ("p95", "#a16207", |s| s.p95_ms),
                ("p99", "#b91c1c", |s| s.p99_ms),
            ],
        ),
        chart(
            "Errors per second",
            t,
            &[("errors", "#b91c1c", |s| s.errors as f64)],
        ),
    ]
    .join("\n");
    // Names come from the scenario file: escaped, so a name cannot add markup.
    let scenario = text::html(scenario);
    let rows: String = report
        .rows
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td></tr>",
                text::html(&r.name), r.count, r.ok, r.ko, r.min_ms, r.p50_ms, r.p75_ms, r.p95_ms, r.p99_ms, r.max_ms, r.mean_ms, r.requests_per_second
            )
        })
        .collect();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{scenario}: loader report</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2rem auto;max-width:60rem}}table{{border-collapse:collapse}}\
         td,th{{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}}td:first-child,th:first-child{{text-align:left}}figure{{margin:1rem 0}}</style>\
         </head><body><h1>{scenario}</h1><p>{seconds:.1} s</p>{charts}<table><tr><th>request</th><th>count</th><th>OK</th><th>KO</th>\
         <th>min</th><th>p50</th><th>p75</th><th>p95</th><th>p99</th><th>max</th><th>mean</th><th>req/s</th></tr>{rows}</table>\
         <p>Times in ms. Data: results.json</p></body></html>"
    );
    std::fs::write(dir.join("index.html"), html)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Row {
        row(name, &[], 1.0)
    }

    #[test]
    fn names_from_the_scenario_are_escaped_in_the_html_and_the_terminal_table() {
        let tag = "<img src=x onerror=alert(1)>";
        let red = "red \x1b[31mALERT\x1b[0m\r\n\u{9b}2J";
        let report = Report {
            rows: vec![named(tag), named(red), named("all requests")],
            timeline: Vec::new(),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        write(dir.path(), &format!("{tag}</title>{red}"), &report, 1.0).expect("write");
        let html = std::fs::read_to_string(dir.path().join("index.html")).expect("html");
        assert!(!html.contains("<img"), "raw tag in the report: {html}");
        assert!(!html.contains("</title><img"), "{html}");
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(!html.contains('\x1b'), "raw ESC in the report: {html:?}");
        let printed = table(&report.rows);
        assert!(
            !printed.chars().any(|c| c.is_control() && c != '\n'),
            "raw control characters in the table: {printed:?}"
        );
        assert!(printed.contains("\\x1b[31mALERT"), "{printed}");
        assert_eq!(printed.lines().count(), 5, "one line per row: {printed}");
    }
}
