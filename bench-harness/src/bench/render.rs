//! Rendering a [`BenchReport`]: a Markdown summary and two hand-written SVG 1.1 plots (latency
//! percentiles against offered rate, and max throughput per scenario). Pure functions, no I/O.

use std::fmt::Write as _;

use super::model::{BenchReport, Percentiles, RunMeta, ScenarioKind, ScenarioResult, Stat, TargetCheck};

/// Relative file names the Markdown links to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    pub json: Vec<String>,
    pub latency_svg: String,
    pub throughput_svg: String,
}

// ---------------------------------------------------------------------------------------------
// Number formatting
// ---------------------------------------------------------------------------------------------

const DASH: &str = "—";

/// Inserts `,` every three digits from the right of a run of ASCII digits (an optional leading
/// `-` is kept).
fn group_digits(digits: &str) -> String {
    let (sign, digits) = match digits.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", digits),
    };
    let len = digits.chars().count();
    let mut out = String::with_capacity(len + len / 3 + 1);
    out.push_str(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (len - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Rounded to an integer, with thousands separators: `68825.4` → `68,825`. "—" when not finite.
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return DASH.to_string();
    }
    let r = v.round();
    // `-0` (from e.g. -0.3) prints as "-0"; normalise it.
    let r = if r == 0.0 { 0.0 } else { r };
    group_digits(&format!("{r:.0}"))
}

fn thousands_u64(v: u64) -> String {
    group_digits(&v.to_string())
}

/// Requests per second: integer with separators.
fn rps(v: f64) -> String {
    thousands(v)
}

/// Microseconds: integer (with separators past 999).
fn us(v: f64) -> String {
    thousands(v)
}

/// A ratio: two decimals and a trailing `×`.
fn ratio(v: f64) -> String {
    if v.is_finite() { format!("{v:.2}×") } else { DASH.to_string() }
}

/// Megabytes: one decimal.
fn mb(v: f64) -> String {
    if v.is_finite() { format!("{v:.1}") } else { DASH.to_string() }
}

/// A general compact number: separators from 1,000 up, integers as integers, otherwise at most two
/// decimals with trailing zeros removed.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return DASH.to_string();
    }
    if v.abs() >= 1000.0 || v.fract() == 0.0 {
        return thousands(v);
    }
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| DASH.to_string(), f)
}

/// `median (min–max)` in req/s; just the median when there is no spread.
fn rps_spread(s: &Stat) -> String {
    if s.min == s.max || !s.min.is_finite() || !s.max.is_finite() {
        rps(s.median)
    } else {
        format!("{} ({}–{})", rps(s.median), rps(s.min), rps(s.max))
    }
}

// ---------------------------------------------------------------------------------------------
// Markdown
// ---------------------------------------------------------------------------------------------

/// Text for Markdown prose and table cells: no line breaks, table pipes and HTML escaped.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' | '\n' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A relative file name usable as a Markdown link destination.
fn md_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '\r' | '\n' | '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// Inline code: a backtick fence longer than any backtick run inside.
fn md_code(s: &str) -> String {
    let fence = "`".repeat(longest_backtick_run(s) + 1);
    let s = s.replace(['\r', '\n'], " ");
    let pad = if s.starts_with('`') || s.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{s}{pad}{fence}")
}

fn longest_backtick_run(s: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        if c == '`' {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

fn kind_name(kind: ScenarioKind) -> &'static str {
    match kind {
        ScenarioKind::Baseline => "baseline",
        ScenarioKind::Gateway => "gateway",
        ScenarioKind::Governed => "governed",
        ScenarioKind::Translated => "translated",
        ScenarioKind::Routed => "routed",
        ScenarioKind::Prompt1k => "prompt-1k",
        ScenarioKind::Guarded => "guarded",
        ScenarioKind::Reference => "reference",
        ScenarioKind::Mcp => "mcp",
    }
}

fn table_row(out: &mut String, cells: &[String]) {
    out.push('|');
    for c in cells {
        out.push(' ');
        out.push_str(c);
        out.push_str(" |");
    }
    out.push('\n');
}

fn table_head(out: &mut String, heads: &[&str]) {
    table_row(out, &heads.iter().map(|h| (*h).to_string()).collect::<Vec<_>>());
    table_row(out, &heads.iter().map(|_| "---".to_string()).collect::<Vec<_>>());
}

/// The benchmark summary in Markdown.
pub fn markdown(report: &BenchReport, files: &Files) -> String {
    let mut out = String::new();
    md_stamp(&mut out, &report.meta);
    md_targets(&mut out, &report.targets);
    md_throughput(&mut out, &report.scenarios);
    md_latency(&mut out, &report.scenarios);
    md_streams(&mut out, &report.scenarios);
    md_notes(&mut out, &report.scenarios);
    md_files(&mut out, files);
    md_how_to_read(&mut out);
    out
}

fn md_stamp(out: &mut String, m: &RunMeta) {
    let _ = writeln!(out, "# shardgate benchmark, {}\n", md(&m.date));
    let dirty = if m.dirty { " (dirty)" } else { "" };
    let _ = writeln!(out, "- **Commit:** {}{dirty}", md_code(&m.commit));
    let _ = writeln!(out, "- **Started:** {}", md(&m.started_at));
    let _ = writeln!(out, "- **Kernel:** {}", md(&m.kernel));
    let _ = writeln!(out, "- **CPU:** {} × {} cpus", md(&m.cpu_model), m.cpus);
    let _ = writeln!(out, "- **Memory:** {} GiB", num(m.memory_gib));
    let _ = writeln!(out, "- **Memory cap (gateway):** {}", md(&m.memory_cap));
    let _ = writeln!(
        out,
        "- **Core layout:** gateway on core {}, mock on core {}, load generator on core {}",
        m.gateway_core, m.mock_core, m.loadgen_core
    );
    let _ = writeln!(
        out,
        "- **Repetitions:** {} (interleaved); {} s measured after {} s warm-up per measurement",
        m.repetitions,
        num(m.duration_s),
        num(m.warmup_s)
    );
    let quick = if m.quick { "yes (shortened runs: indicative only)" } else { "no" };
    let _ = writeln!(out, "- **Quick mode:** {quick}");
    if m.versions.is_empty() {
        let _ = writeln!(out, "- **Versions:** {DASH}");
    } else {
        let versions = m.versions.iter().map(|(k, v)| format!("{} {}", md(k), md(v))).collect::<Vec<_>>().join(", ");
        let _ = writeln!(out, "- **Versions:** {versions}");
    }
    let fence = "`".repeat(longest_backtick_run(&m.command).max(2) + 1);
    let _ = writeln!(out, "- **Command:**\n\n{fence}sh\n{}\n{fence}\n", m.command.trim_end());
}

fn md_targets(out: &mut String, targets: &[TargetCheck]) {
    out.push_str("## Targets\n\n");
    if targets.is_empty() {
        out.push_str("_No targets were checked._\n\n");
        return;
    }
    table_head(out, &["target", "goal", "measured", "met", "note"]);
    for t in targets {
        let measured = match t.value {
            Some(v) if t.unit.trim().is_empty() || t.unit.trim().starts_with(['×', '%']) => {
                format!("{}{}", num(v), md(t.unit.trim()))
            }
            Some(v) => format!("{} {}", num(v), md(t.unit.trim())),
            None => "not measured".to_string(),
        };
        let met = match t.met {
            Some(true) => "✅",
            Some(false) => "❌",
            None => DASH,
        };
        table_row(out, &[md(&t.name), md(&t.goal), measured, met.to_string(), md(&t.note)]);
    }
    out.push('\n');
}

fn md_throughput(out: &mut String, scenarios: &[ScenarioResult]) {
    out.push_str("## Throughput\n\n");
    if scenarios.is_empty() {
        out.push_str("_No scenarios were run._\n\n");
        return;
    }
    table_head(
        out,
        &[
            "scenario",
            "kind",
            "driver",
            "max throughput (req/s, median (min–max))",
            "vs baseline",
            "vs nginx",
            "throughput at SLO (req/s, p99 added ≤ 1 ms)",
            "CPU µs/request (median)",
            "idle RSS (MB)",
            "peak RSS (MB)",
            "errors",
        ],
    );
    for s in scenarios {
        table_row(
            out,
            &[
                md(&s.name),
                kind_name(s.kind).to_string(),
                opt(s.driver.as_deref(), md),
                opt(s.max_throughput_rps.as_ref(), rps_spread),
                opt(s.ratio_to_baseline, ratio),
                opt(s.ratio_to_nginx, ratio),
                opt(s.throughput_at_slo_rps, rps),
                opt(s.cpu_us_per_request.as_ref(), |c| us(c.median)),
                opt(s.idle_rss_mb, mb),
                opt(s.peak_rss_mb, mb),
                thousands_u64(s.errors),
            ],
        );
    }
    out.push('\n');
}

fn md_latency(out: &mut String, scenarios: &[ScenarioResult]) {
    out.push_str("## Latency at fixed rates\n\n");
    let with_rates: Vec<&ScenarioResult> = scenarios.iter().filter(|s| !s.rates.is_empty()).collect();
    if with_rates.is_empty() {
        out.push_str("_No fixed-rate measurements._\n\n");
        return;
    }
    for s in with_rates {
        let _ = writeln!(out, "### {}\n", md(&s.name));
        table_head(
            out,
            &[
                "offered req/s",
                "achieved req/s (median)",
                "service p50 (µs)",
                "service p90 (µs)",
                "service p99 (µs)",
                "service p99.9 (µs)",
                "added p50 (µs)",
                "added p99 (µs)",
                "latency-from-intended p99 (µs)",
                "errors",
            ],
        );
        let mut rates: Vec<_> = s.rates.iter().collect();
        rates.sort_by(|a, b| a.offered_rps.total_cmp(&b.offered_rps));
        for r in rates {
            table_row(
                out,
                &[
                    rps(r.offered_rps),
                    rps(r.achieved_rps.median),
                    us(r.service_us.p50.median),
                    us(r.service_us.p90.median),
                    us(r.service_us.p99.median),
                    us(r.service_us.p99_9.median),
                    opt(r.added_us.as_ref(), |a| us(a.p50.median)),
                    opt(r.added_us.as_ref(), |a| us(a.p99.median)),
                    us(r.latency_us.p99.median),
                    thousands_u64(r.errors),
                ],
            );
        }
        out.push('\n');
    }
}

fn md_streams(out: &mut String, scenarios: &[ScenarioResult]) {
    let streams: Vec<&ScenarioResult> =
        scenarios.iter().filter(|s| s.ttft_us.is_some() || s.ttft_overhead_us.is_some()).collect();
    if streams.is_empty() {
        return;
    }
    out.push_str("## Streams\n\n");
    table_head(
        out,
        &["scenario", "TTFT p50 (µs)", "TTFT p99 (µs)", "TTFT overhead p50 (µs)", "TTFT overhead p99 (µs)"],
    );
    let p50 = |p: &Percentiles| us(p.p50.median);
    let p99 = |p: &Percentiles| us(p.p99.median);
    for s in streams {
        table_row(
            out,
            &[
                md(&s.name),
                opt(s.ttft_us.as_ref(), p50),
                opt(s.ttft_us.as_ref(), p99),
                opt(s.ttft_overhead_us.as_ref(), p50),
                opt(s.ttft_overhead_us.as_ref(), p99),
            ],
        );
    }
    out.push('\n');
}

fn md_notes(out: &mut String, scenarios: &[ScenarioResult]) {
    let noted: Vec<&ScenarioResult> =
        scenarios.iter().filter(|s| !s.notes.is_empty() || !s.description.trim().is_empty()).collect();
    if noted.is_empty() {
        return;
    }
    out.push_str("## Notes\n\n");
    for s in noted {
        if s.description.trim().is_empty() {
            let _ = writeln!(out, "- **{}**", md(&s.name));
        } else {
            let _ = writeln!(out, "- **{}**: {}", md(&s.name), md(s.description.trim()));
        }
        for n in &s.notes {
            let _ = writeln!(out, "  - {}", md(n));
        }
    }
    out.push('\n');
}

fn md_files(out: &mut String, files: &Files) {
    out.push_str("## Files\n\n");
    if !files.json.is_empty() {
        let links = files.json.iter().map(|f| format!("[{}]({})", md(f), md_url(f))).collect::<Vec<_>>().join(", ");
        let _ = writeln!(out, "- Raw results (JSON): {links}");
    }
    if !files.latency_svg.is_empty() {
        let _ = writeln!(out, "- Latency plot: [{}]({})", md(&files.latency_svg), md_url(&files.latency_svg));
    }
    if !files.throughput_svg.is_empty() {
        let _ = writeln!(out, "- Throughput plot: [{}]({})", md(&files.throughput_svg), md_url(&files.throughput_svg));
    }
    out.push('\n');
    if !files.latency_svg.is_empty() {
        let _ = writeln!(out, "![latency]({})\n", md_url(&files.latency_svg));
    }
    if !files.throughput_svg.is_empty() {
        let _ = writeln!(out, "![throughput]({})\n", md_url(&files.throughput_svg));
    }
}

fn md_how_to_read(out: &mut String) {
    out.push_str(
        "## How to read this\n\n\
         Every figure is the median of interleaved repetitions (scenarios take turns within each \
         repetition), with the min–max spread across repetitions where shown. \"Added\" latency is \
         the gateway's minus the direct-to-mock baseline's, at the same offered rate and in the same \
         repetition, percentile by percentile. Service time is measured from the first byte written; \
         latency is measured from the intended send time, so it is free of coordinated omission and \
         includes any queueing at the load generator. Ratios (vs baseline, vs nginx) compare \
         measurements from this same run on this same machine.\n",
    );
}

// ---------------------------------------------------------------------------------------------
// SVG
// ---------------------------------------------------------------------------------------------

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const PALETTE: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
const AXIS: &str = "#333333";
const GRID: &str = "#e3e3e3";
const GRID_MINOR: &str = "#f2f2f2";
const MUTED: &str = "#555555";

fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// XML text / attribute escaping; characters XML 1.0 forbids are dropped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A coordinate: one decimal, and never NaN or infinite.
fn c(v: f64) -> String {
    if v.is_finite() { format!("{v:.1}") } else { "0.0".to_string() }
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn short_commit(commit: &str) -> String {
    commit.chars().take(8).collect()
}

/// "date, commit8 (dirty)" for plot titles.
fn stamp(meta: &RunMeta) -> String {
    let dirty = if meta.dirty { " (dirty)" } else { "" };
    format!("{}, {}{dirty}", meta.date, short_commit(&meta.commit))
}

fn svg_open(out: &mut String, title: &str, subtitle: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n\
         <title>{t}</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n\
         <text x=\"{cx}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\" fill=\"{AXIS}\">{t}</text>\n",
        w = WIDTH,
        h = HEIGHT,
        cx = c(WIDTH / 2.0),
        t = esc(title),
    );
    if !subtitle.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"42\" text-anchor=\"middle\" fill=\"{MUTED}\">{}</text>",
            c(WIDTH / 2.0),
            esc(subtitle)
        );
    }
}

fn svg_close(out: &mut String) {
    out.push_str("</svg>\n");
}

fn line(out: &mut String, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, extra: &str) {
    let _ = writeln!(
        out,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{stroke}\"{extra}/>",
        c(x1),
        c(y1),
        c(x2),
        c(y2)
    );
}

fn text(out: &mut String, x: f64, y: f64, attrs: &str, body: &str) {
    let _ = writeln!(out, "<text x=\"{}\" y=\"{}\"{attrs}>{}</text>", c(x), c(y), esc(body));
}

/// The x-axis title under the plot and the y-axis title rotated at `y_x`.
fn axis_titles(out: &mut String, p: &Plot, x_title: &str, y_title: &str, y_x: f64) {
    text(out, (p.left + p.right) / 2.0, p.bottom + 42.0, " text-anchor=\"middle\" font-size=\"13\"", x_title);
    let ymid = (p.top + p.bottom) / 2.0;
    let rotate = format!(" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 {} {})\"", c(y_x), c(ymid));
    text(out, y_x, ymid, &rotate, y_title);
}

fn no_data(out: &mut String, p: &Plot) {
    text(
        out,
        (p.left + p.right) / 2.0,
        (p.top + p.bottom) / 2.0,
        &format!(" text-anchor=\"middle\" font-size=\"18\" fill=\"{MUTED}\""),
        "no data",
    );
}

/// The plot area.
struct Plot {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Plot {
    fn axes(&self, out: &mut String) {
        line(out, self.left, self.bottom, self.right, self.bottom, AXIS, " stroke-width=\"1.5\"");
        line(out, self.left, self.top, self.left, self.bottom, AXIS, " stroke-width=\"1.5\"");
    }
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `target` intervals over `[0, span]`.
fn nice_step(span: f64, target: f64) -> f64 {
    if !(span.is_finite() && span > 0.0 && target > 0.0) {
        return 1.0;
    }
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    if !(mag.is_finite() && mag > 0.0) {
        return 1.0;
    }
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Tick values `0, step, 2·step, … ≤ max` (at most 50).
fn linear_ticks(max: f64, step: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    if !(max.is_finite() && step.is_finite() && step > 0.0) {
        return ticks;
    }
    for k in 0..=50u32 {
        let v = f64::from(k) * step;
        if v > max * (1.0 + 1e-9) {
            break;
        }
        ticks.push(v);
    }
    ticks
}

fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        thousands(v)
    } else {
        let decimals = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
        format!("{v:.decimals$}")
    }
}

/// Linear map of `[0, max]` onto `[a, b]`; out-of-range and non-finite values are clamped.
fn lin(v: f64, max: f64, a: f64, b: f64) -> f64 {
    let v = if v.is_finite() { v } else { 0.0 };
    let t = if max > 0.0 && max.is_finite() { (v / max).clamp(0.0, 1.0) } else { 0.0 };
    a + t * (b - a)
}

/// A log10 axis over `[10^lo, 10^hi]`.
struct LogAxis {
    lo: i32,
    hi: i32,
}

impl LogAxis {
    /// Decades covering the positive, finite values (10 to 10,000 when there are none).
    fn covering(values: impl Iterator<Item = f64>) -> LogAxis {
        let (mut min, mut max) = (f64::INFINITY, 0.0f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            min = min.min(v);
            max = max.max(v);
        }
        if !(min.is_finite() && max > 0.0) {
            return LogAxis { lo: 1, hi: 4 };
        }
        // Ticks from 10 µs unless the data go below; values under 1 µs clamp to 1.
        let lo = (min.log10().floor().clamp(0.0, 12.0) as i32).min(1);
        let hi = (max.log10().ceil().clamp(0.0, 15.0) as i32).max(lo + 1);
        LogAxis { lo, hi }
    }

    /// The y coordinate of `v`; zero, negative or non-finite values clamp to the axis ends.
    fn y(&self, v: f64, top: f64, bottom: f64) -> f64 {
        let (lo, hi) = (f64::from(self.lo), f64::from(self.hi));
        let l = if v == f64::INFINITY {
            hi
        } else if v.is_finite() && v > 0.0 {
            v.log10().clamp(lo, hi)
        } else {
            lo
        };
        let span = (hi - lo).max(1.0);
        bottom - (l - lo) / span * (bottom - top)
    }
}

fn pow10_label(e: i32) -> String {
    if (0..=9).contains(&e) { thousands(10f64.powi(e)) } else { format!("1e{e}") }
}

/// One scenario's plotted points: (offered req/s, median service p99 µs, median service p50 µs).
type RatePoints = Vec<(f64, f64, f64)>;

/// Latency percentiles (median service p99 solid, p50 dashed) against offered rate, one colour per
/// scenario, latency on a log10 axis.
pub fn latency_svg(report: &BenchReport) -> String {
    let p = Plot { left: 80.0, right: 590.0, top: 60.0, bottom: 410.0 };
    let mut out = String::new();
    svg_open(
        &mut out,
        &format!("shardgate: service latency vs offered rate, {}", stamp(&report.meta)),
        &format!("median over {} repetitions; solid = p99, dashed = p50", report.meta.repetitions),
    );

    // (scenario index, name, points (offered, p99, p50) sorted by offered rate)
    let mut series: Vec<(usize, &str, RatePoints)> = Vec::new();
    for (i, s) in report.scenarios.iter().enumerate() {
        let mut pts: RatePoints = s
            .rates
            .iter()
            .filter(|r| r.offered_rps.is_finite())
            .map(|r| (r.offered_rps.max(0.0), r.service_us.p99.median, r.service_us.p50.median))
            .collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push((i, s.name.as_str(), pts));
    }

    let max_rate = series.iter().flat_map(|(_, _, pts)| pts.iter().map(|p| p.0)).fold(0.0f64, f64::max);
    let x_max = if max_rate > 0.0 && max_rate.is_finite() { max_rate * 1.05 } else { 1000.0 };
    let yaxis = LogAxis::covering(series.iter().flat_map(|(_, _, pts)| pts.iter().flat_map(|p| [p.1, p.2])));

    // Grid and y ticks (decades, with faint 2–9 minor lines).
    for e in yaxis.lo..=yaxis.hi {
        let decade = 10f64.powi(e);
        let y = yaxis.y(decade, p.top, p.bottom);
        line(&mut out, p.left, y, p.right, y, GRID, "");
        line(&mut out, p.left - 5.0, y, p.left, y, AXIS, "");
        text(&mut out, p.left - 8.0, y + 4.0, " text-anchor=\"end\"", &pow10_label(e));
        if e < yaxis.hi {
            for m in 2..=9 {
                let ym = yaxis.y(decade * f64::from(m), p.top, p.bottom);
                line(&mut out, p.left, ym, p.right, ym, GRID_MINOR, "");
            }
        }
    }
    // x ticks.
    let step = nice_step(x_max, 6.0);
    for v in linear_ticks(x_max, step) {
        let x = lin(v, x_max, p.left, p.right);
        line(&mut out, x, p.bottom, x, p.bottom + 5.0, AXIS, "");
        text(&mut out, x, p.bottom + 19.0, " text-anchor=\"middle\"", &tick_label(v, step));
    }
    p.axes(&mut out);
    axis_titles(&mut out, &p, "offered rate (req/s)", "service latency (µs, log scale)", 22.0);

    if series.is_empty() {
        no_data(&mut out, &p);
        svg_close(&mut out);
        return out;
    }

    // Data.
    for (i, name, pts) in &series {
        let col = colour(*i);
        let _ = writeln!(out, "<g>\n<title>{}</title>", esc(name));
        for (which, dashed) in [("p99", false), ("p50", true)] {
            let xy: Vec<(f64, f64, f64)> = pts
                .iter()
                .map(|&(rate, p99, p50)| {
                    let v = if dashed { p50 } else { p99 };
                    (lin(rate, x_max, p.left, p.right), yaxis.y(v, p.top, p.bottom), v)
                })
                .collect();
            let points = xy.iter().map(|(x, y, _)| format!("{},{}", c(*x), c(*y))).collect::<Vec<_>>().join(" ");
            let dash = if dashed { " stroke-dasharray=\"6 4\"" } else { "" };
            let _ = writeln!(
                out,
                "<polyline points=\"{points}\" fill=\"none\" stroke=\"{col}\" stroke-width=\"2\"{dash}/>"
            );
            for ((x, y, v), &(rate, _, _)) in xy.iter().zip(pts.iter()) {
                let fill = if dashed { "#ffffff" } else { col };
                let _ = writeln!(
                    out,
                    "<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{fill}\" stroke=\"{col}\" stroke-width=\"1.5\">\
                     <title>{} {which} at {} req/s: {} µs</title></circle>",
                    c(*x),
                    c(*y),
                    esc(name),
                    rps(rate),
                    us(*v)
                );
            }
        }
        out.push_str("</g>\n");
    }

    // Legend.
    let (lx, ly, row) = (604.0, 62.0, 18.0);
    let lh = 12.0 + row * (series.len() * 2) as f64;
    let _ = writeln!(
        out,
        "<g>\n<rect x=\"{}\" y=\"{}\" width=\"188\" height=\"{}\" fill=\"#ffffff\" stroke=\"{GRID}\"/>",
        c(lx - 6.0),
        c(ly - 6.0),
        c(lh)
    );
    let mut y = ly + 8.0;
    for (i, name, _) in &series {
        let col = colour(*i);
        for (which, dashed) in [("p99", false), ("p50", true)] {
            let dash = if dashed { " stroke-dasharray=\"6 4\"" } else { "" };
            line(&mut out, lx, y, lx + 26.0, y, col, &format!(" stroke-width=\"2\"{dash}"));
            let fill = if dashed { "#ffffff" } else { col };
            let _ = writeln!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"3.5\" fill=\"{fill}\" stroke=\"{col}\" stroke-width=\"1.5\"/>",
                c(lx + 13.0),
                c(y)
            );
            text(&mut out, lx + 32.0, y + 4.0, "", &format!("{} {which}", truncate(name, 20)));
            y += row;
        }
    }
    out.push_str("</g>\n");
    svg_close(&mut out);
    out
}

/// Median max throughput per scenario as horizontal bars, with min–max whiskers and value labels.
pub fn throughput_svg(report: &BenchReport) -> String {
    let p = Plot { left: 190.0, right: 720.0, top: 72.0, bottom: 410.0 };
    let mut out = String::new();
    svg_open(&mut out, &format!("shardgate: max throughput per scenario, {}", stamp(&report.meta)), "");

    let bars: Vec<(usize, &ScenarioResult, &Stat)> = report
        .scenarios
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.max_throughput_rps.as_ref().map(|t| (i, s, t)))
        .collect();

    // Legend: what a bar and a whisker mean.
    let lg = 50.0;
    let _ = writeln!(out, "<g>\n<rect x=\"220\" y=\"{}\" width=\"22\" height=\"10\" fill=\"{MUTED}\"/>", c(lg - 9.0));
    text(&mut out, 248.0, lg, "", &format!("median of {} repetitions (closed loop)", report.meta.repetitions));
    line(&mut out, 520.0, lg - 4.0, 550.0, lg - 4.0, AXIS, " stroke-width=\"1.5\"");
    line(&mut out, 520.0, lg - 9.0, 520.0, lg + 1.0, AXIS, " stroke-width=\"1.5\"");
    line(&mut out, 550.0, lg - 9.0, 550.0, lg + 1.0, AXIS, " stroke-width=\"1.5\"");
    text(&mut out, 556.0, lg, "", "min–max over repetitions");
    out.push_str("</g>\n");

    let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    let max_val = bars.iter().map(|(_, _, t)| finite(t.median).max(finite(t.max))).fold(0.0f64, f64::max);
    // Headroom for the value labels.
    let want = if max_val > 0.0 { max_val * 1.18 } else { 1000.0 };
    let step = nice_step(want, 5.0);
    let x_max = {
        let m = (want / step).ceil() * step;
        if m.is_finite() && m > 0.0 { m } else { 1000.0 }
    };

    for v in linear_ticks(x_max, step) {
        let x = lin(v, x_max, p.left, p.right);
        line(&mut out, x, p.top, x, p.bottom, GRID, "");
        line(&mut out, x, p.bottom, x, p.bottom + 5.0, AXIS, "");
        text(&mut out, x, p.bottom + 19.0, " text-anchor=\"middle\"", &tick_label(v, step));
    }
    p.axes(&mut out);
    axis_titles(&mut out, &p, "max throughput (req/s)", "scenario", 18.0);

    if bars.is_empty() {
        no_data(&mut out, &p);
        svg_close(&mut out);
        return out;
    }

    let band = (p.bottom - p.top) / bars.len() as f64;
    let bar_h = (band * 0.6).min(36.0);
    for (k, (i, s, t)) in bars.iter().enumerate() {
        let col = colour(*i);
        let cy = p.top + band * (k as f64 + 0.5);
        let x_med = lin(finite(t.median), x_max, p.left, p.right);
        let x_min = lin(finite(t.min), x_max, p.left, p.right);
        let x_hi = lin(finite(t.max), x_max, p.left, p.right);
        let _ = writeln!(out, "<g>\n<title>{}: {} req/s</title>", esc(&s.name), esc(&rps_spread(t)));
        text(&mut out, p.left - 8.0, cy + 4.0, " text-anchor=\"end\"", &truncate(&s.name, 26));
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{col}\" fill-opacity=\"0.85\"/>",
            c(p.left),
            c(cy - bar_h / 2.0),
            c((x_med - p.left).max(0.0)),
            c(bar_h)
        );
        if x_hi > x_min {
            let cap = (bar_h * 0.35).max(3.0);
            line(&mut out, x_min, cy, x_hi, cy, AXIS, " stroke-width=\"1.5\"");
            line(&mut out, x_min, cy - cap, x_min, cy + cap, AXIS, " stroke-width=\"1.5\"");
            line(&mut out, x_hi, cy - cap, x_hi, cy + cap, AXIS, " stroke-width=\"1.5\"");
        }
        text(&mut out, x_med.max(x_hi) + 6.0, cy + 4.0, &format!(" fill=\"{AXIS}\""), &rps(t.median));
        out.push_str("</g>\n");
    }
    svg_close(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::model::RatePoint;

    fn stat(v: &[f64]) -> Stat {
        Stat::of(v.to_vec()).unwrap()
    }

    fn pct(base: f64) -> Percentiles {
        Percentiles {
            p50: stat(&[base, base * 1.1, base * 0.9]),
            p90: stat(&[base * 2.0, base * 2.1]),
            p99: stat(&[base * 4.0, base * 4.4, base * 3.9]),
            p99_9: stat(&[base * 9.0]),
        }
    }

    fn rate(offered: f64, base: f64, added: bool) -> RatePoint {
        RatePoint {
            offered_rps: offered,
            achieved_rps: stat(&[offered * 0.999, offered]),
            latency_us: pct(base * 1.5),
            service_us: pct(base),
            added_us: added.then(|| pct(base / 4.0)),
            errors: 0,
        }
    }

    fn scenario(name: &str, kind: ScenarioKind) -> ScenarioResult {
        ScenarioResult {
            name: name.to_string(),
            description: format!("{name} description"),
            kind,
            driver: None,
            max_throughput_rps: None,
            throughput_at_slo_rps: None,
            rates: Vec::new(),
            ttft_overhead_us: None,
            ttft_us: None,
            idle_rss_mb: None,
            peak_rss_mb: None,
            cpu_us_per_request: None,
            ratio_to_baseline: None,
            ratio_to_nginx: None,
            errors: 0,
            notes: Vec::new(),
        }
    }

    fn meta() -> RunMeta {
        RunMeta {
            date: "2025-03-14".to_string(),
            started_at: "2025-03-14T09:26:53Z".to_string(),
            command: "shardgate-bench run --repetitions 3 --out results/".to_string(),
            commit: "0123456789abcdef0123456789abcdef01234567".to_string(),
            dirty: true,
            kernel: "6.8.0-45-generic".to_string(),
            cpu_model: "AMD EPYC 7B13".to_string(),
            cpus: 4,
            memory_gib: 15.6,
            memory_cap: "systemd-run MemoryMax=1G".to_string(),
            gateway_core: 1,
            mock_core: 2,
            loadgen_core: 3,
            quick: false,
            repetitions: 3,
            duration_s: 10.0,
            warmup_s: 2.0,
            versions: vec![("nginx".to_string(), "1.24.0".to_string()), ("rustc".to_string(), "1.95.0".to_string())],
        }
    }

    fn sample() -> BenchReport {
        let mut base = scenario("direct-baseline", ScenarioKind::Baseline);
        base.max_throughput_rps = Some(stat(&[74_000.0, 73_120.0, 75_310.0]));
        base.rates = vec![rate(1000.0, 40.0, false), rate(5000.0, 55.0, false)];
        base.cpu_us_per_request = Some(stat(&[11.0, 12.0]));
        base.ratio_to_baseline = Some(1.0);

        let mut gw = scenario("shardgate-epoll", ScenarioKind::Gateway);
        gw.driver = Some("epoll".to_string());
        gw.max_throughput_rps = Some(stat(&[68_825.0, 67_990.0, 69_410.0]));
        gw.throughput_at_slo_rps = Some(5000.0);
        gw.rates = vec![rate(5000.0, 90.0, true), rate(1000.0, 70.0, true)];
        gw.idle_rss_mb = Some(12.34);
        gw.peak_rss_mb = Some(48.76);
        gw.cpu_us_per_request = Some(stat(&[14.2, 14.6, 14.4]));
        gw.ratio_to_baseline = Some(0.93);
        gw.ratio_to_nginx = Some(1.234);
        gw.notes = vec!["pinned to core 1".to_string()];

        let mut nginx = scenario("nginx-reference", ScenarioKind::Reference);
        nginx.max_throughput_rps = Some(stat(&[55_774.0]));
        nginx.rates = vec![rate(1000.0, 80.0, true), rate(5000.0, 110.0, true)];
        nginx.ratio_to_nginx = Some(1.0);
        nginx.errors = 1234;

        let mut stream = scenario("shardgate-stream", ScenarioKind::Gateway);
        stream.driver = Some("epoll".to_string());
        stream.ttft_us = Some(pct(20_150.0));
        stream.ttft_overhead_us = Some(pct(120.0));

        BenchReport {
            meta: meta(),
            scenarios: vec![base, gw, nginx, stream],
            targets: vec![
                TargetCheck {
                    name: "throughput vs nginx".to_string(),
                    goal: ">= 0.9x nginx req/s".to_string(),
                    value: Some(1.234),
                    unit: "×".to_string(),
                    met: Some(true),
                    note: String::new(),
                },
                TargetCheck {
                    name: "added p99".to_string(),
                    goal: "<= 200 µs".to_string(),
                    value: Some(360.0),
                    unit: "µs".to_string(),
                    met: Some(false),
                    note: "160 µs over".to_string(),
                },
                TargetCheck {
                    name: "idle RSS".to_string(),
                    goal: "<= 32 MB".to_string(),
                    value: None,
                    unit: "MB".to_string(),
                    met: None,
                    note: "no cgroup".to_string(),
                },
            ],
        }
    }

    fn files() -> Files {
        Files {
            json: vec!["bench-2025-03-14.json".to_string()],
            latency_svg: "latency.svg".to_string(),
            throughput_svg: "throughput.svg".to_string(),
        }
    }

    /// Checks tags nest and close properly, and every `&` starts a known entity.
    fn assert_well_formed(svg: &str) {
        let s = svg.trim();
        assert!(s.starts_with("<svg"), "starts with <svg: {}", &s[..s.len().min(40)]);
        assert!(s.ends_with("</svg>"));
        assert!(!s.contains("NaN") && !s.contains("inf"), "NaN/inf in {s}");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find('<') {
            let after = &rest[start + 1..];
            let end = after.find('>').expect("unclosed <");
            let tag = &after[..end];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().unwrap_or_else(|| panic!("close without open: {name}"));
                assert_eq!(open, name.trim(), "mismatched close");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name.to_string());
            }
            rest = &after[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        for (i, _) in s.match_indices('&') {
            let tail = &s[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].iter().any(|e| tail.starts_with(e)),
                "bare & at {}",
                &tail[..tail.len().min(12)]
            );
        }
        assert_eq!(s.matches("<text").count(), s.matches("</text>").count());
        assert_eq!(s.matches("<g>").count() + s.matches("<g ").count(), s.matches("</g>").count());
    }

    #[test]
    fn render_thousands_and_numbers() {
        assert_eq!(thousands(68_825.4), "68,825");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(-0.3), "0");
        assert_eq!(thousands(-1_234_567.0), "-1,234,567");
        assert_eq!(thousands(f64::NAN), "—");
        assert_eq!(thousands_u64(1_000_000), "1,000,000");
        assert_eq!(ratio(1.234), "1.23×");
        assert_eq!(mb(12.34), "12.3");
        assert_eq!(num(15.60), "15.6");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(12_345.6), "12,346");
    }

    #[test]
    fn render_markdown_has_stamp_tables_and_numbers() {
        let md = markdown(&sample(), &files());
        assert!(md.starts_with("# shardgate benchmark, 2025-03-14\n"));
        for needle in [
            "0123456789abcdef0123456789abcdef01234567",
            "(dirty)",
            "6.8.0-45-generic",
            "AMD EPYC 7B13 × 4 cpus",
            "15.6 GiB",
            "systemd-run MemoryMax=1G",
            "gateway on core 1, mock on core 2, load generator on core 3",
            "**Repetitions:** 3",
            "10 s measured after 2 s warm-up",
            "**Quick mode:** no",
            "```sh\nshardgate-bench run --repetitions 3 --out results/\n```",
            "nginx 1.24.0, rustc 1.95.0",
            "## Targets",
            "| throughput vs nginx | &gt;= 0.9x nginx req/s | 1.23× | ✅ |",
            "| added p99 | &lt;= 200 µs | 360 µs | ❌ | 160 µs over |",
            "| idle RSS | &lt;= 32 MB | not measured | — | no cgroup |",
            "## Throughput",
            "| shardgate-epoll | gateway | epoll | 68,825 (67,990–69,410) | 0.93× | 1.23× | 5,000 | 14 | 12.3 | 48.8 | 0 |",
            "| nginx-reference | reference | — | 55,774 | — | 1.00× | — | — | — | — | 1,234 |",
            "## Latency at fixed rates",
            "### direct-baseline",
            "### shardgate-epoll",
            "### nginx-reference",
            "## Streams",
            "| shardgate-stream | 20,150 | 80,600 | 120 | 480 |",
            "## Notes",
            "  - pinned to core 1",
            "[bench-2025-03-14.json](bench-2025-03-14.json)",
            "![latency](latency.svg)",
            "![throughput](throughput.svg)",
            "## How to read this",
            "coordinated omission",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in:\n{md}");
        }
        // Baseline rows: added columns are "—"; rates sorted by offered rate.
        assert!(md.contains("| 1,000 | 1,000 | 40 | 82 | 160 | 360 | — | — | 240 | 0 |"), "{md}");
        let gw = &md[md.find("### shardgate-epoll").unwrap()..];
        assert!(gw.find("| 1,000 |").unwrap() < gw.find("| 5,000 |").unwrap());
        assert!(!md.contains("### shardgate-stream"));
    }

    #[test]
    fn render_svgs_are_well_formed_with_legend() {
        let report = sample();
        let lat = latency_svg(&report);
        let thr = throughput_svg(&report);
        assert_well_formed(&lat);
        assert_well_formed(&thr);
        for svg in [&lat, &thr] {
            assert!(svg.contains("2025-03-14, 01234567"), "title stamp");
            assert!(svg.contains("width=\"800\" height=\"480\""));
            assert!(!svg.contains("no data"));
        }
        for name in ["direct-baseline", "shardgate-epoll", "nginx-reference"] {
            assert!(lat.contains(&format!(">{name} p99</text>")), "latency legend {name}");
            assert!(lat.contains(&format!(">{name} p50</text>")), "latency legend {name}");
            assert!(thr.contains(&format!(">{name}</text>")), "throughput label {name}");
        }
        assert!(!lat.contains("shardgate-stream"), "no rates, no series");
        assert!(thr.contains(">68,825</text>"));
        assert_eq!(lat.matches("<polyline").count(), 6);
        assert!(lat.contains("stroke-dasharray"));
        // Log ticks covering 36 µs .. 484 µs.
        assert!(lat.contains(">10</text>") && lat.contains(">1,000</text>"));
    }

    #[test]
    fn render_empty_report_says_no_data() {
        let mut report = sample();
        report.scenarios.clear();
        report.targets.clear();
        let md = markdown(&report, &Files::default());
        assert!(md.contains("_No targets were checked._") && md.contains("_No scenarios were run._"));
        for svg in [latency_svg(&report), throughput_svg(&report)] {
            assert_well_formed(&svg);
            assert!(svg.contains(">no data</text>"));
        }
        // Scenarios present but nothing plottable.
        let mut report = sample();
        for s in &mut report.scenarios {
            s.rates.clear();
            s.max_throughput_rps = None;
        }
        for svg in [latency_svg(&report), throughput_svg(&report)] {
            assert_well_formed(&svg);
            assert!(svg.contains(">no data</text>"));
        }
    }

    #[test]
    fn render_degenerate_values_never_produce_nan() {
        let mut report = sample();
        let s = &mut report.scenarios[1];
        s.rates[0].service_us.p99 = stat(&[0.0]);
        s.rates[0].service_us.p50 = stat(&[-5.0]);
        s.rates[1].service_us.p99 = stat(&[f64::NAN]);
        s.rates[1].offered_rps = 0.0;
        s.max_throughput_rps = Some(Stat { median: f64::NAN, min: -1.0, max: f64::INFINITY, samples: vec![] });
        report.scenarios[0].rates[0].offered_rps = f64::NAN;
        assert_well_formed(&latency_svg(&report));
        assert_well_formed(&throughput_svg(&report));
        // All throughputs zero, all rates zero.
        for s in &mut report.scenarios {
            s.max_throughput_rps = Some(stat(&[0.0]));
            for r in &mut s.rates {
                r.offered_rps = 0.0;
            }
        }
        assert_well_formed(&latency_svg(&report));
        assert_well_formed(&throughput_svg(&report));
        let _ = markdown(&report, &files());
    }

    #[test]
    fn render_escapes_names() {
        let mut report = sample();
        report.scenarios[1].name = "a<b>&\"c\"|d".to_string();
        report.meta.commit = "<&>\"".to_string();
        let lat = latency_svg(&report);
        let thr = throughput_svg(&report);
        assert_well_formed(&lat);
        assert_well_formed(&thr);
        let escaped = "a&lt;b&gt;&amp;&quot;c&quot;|d";
        assert!(lat.contains(&format!(">{escaped} p99</text>")), "{lat}");
        assert!(thr.contains(&format!(">{escaped}</text>")), "{thr}");
        assert!(!lat.contains("a<b>") && !thr.contains("a<b>"));
        let md = markdown(&report, &files());
        assert!(md.contains("a&lt;b&gt;&amp;\"c\"\\|d"), "{md}");
        assert!(!md.contains("a<b>"));
    }
}
