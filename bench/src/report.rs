//! Medians, ratios to the best peer, and the three outputs: the terminal table,
//! `results.json` and `report.md` with one SVG chart per workload family.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::chart;
use crate::driver::Sample;
use crate::host::Host;
use crate::impls::ImplId;
use crate::workloads::{Case, Scale, Workload, FAMILIES};

/// The medians of one (case, implementation).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) case: Case,
    pub(crate) implementation: ImplId,
    pub(crate) median_ns: f64,
    pub(crate) min_ns: f64,
    pub(crate) max_ns: f64,
    /// Median over runs of the whole process's peak resident set.
    pub(crate) peak_rss: u64,
    /// Median over runs of the peak resident set minus the resident set at the start of
    /// the run: what the implementation and the workload's objects added.
    pub(crate) rss_growth: u64,
    pub(crate) runs: usize,
    pub(crate) detail: String,
}

impl Row {
    pub(crate) fn from_samples(case: Case, implementation: ImplId, samples: &[Sample]) -> Self {
        let mut ns: Vec<f64> = samples.iter().map(|s| s.ns_per_op).collect();
        ns.sort_by(f64::total_cmp);
        let median_ns = median_f64(&ns);
        let peak_rss = median_u64(samples.iter().map(|s| s.peak_rss_bytes).collect());
        let rss_growth =
            median_u64(samples.iter().map(|s| s.peak_rss_bytes.saturating_sub(s.start_rss_bytes)).collect());
        // The detail of the run nearest the median.
        let detail = samples
            .iter()
            .min_by(|a, b| (a.ns_per_op - median_ns).abs().total_cmp(&(b.ns_per_op - median_ns).abs()))
            .map(|s| s.detail.clone())
            .unwrap_or_default();
        Self {
            case,
            implementation,
            median_ns,
            min_ns: ns.first().copied().unwrap_or(f64::NAN),
            max_ns: ns.last().copied().unwrap_or(f64::NAN),
            peak_rss,
            rss_growth,
            runs: samples.len(),
            detail,
        }
    }

    fn ops_per_sec(&self) -> f64 {
        1e9 / self.median_ns
    }
}

fn median_f64(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn median_u64(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    match values.len() {
        0 => 0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

/// Facts about the whole run, for the report's head; kept in `run.json` beside
/// `results.json` so that `numaslab-bench report` can redraw the report.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Context {
    #[serde(with = "scale_name")]
    pub(crate) scale: Scale,
    pub(crate) runs: usize,
    pub(crate) elapsed: Duration,
    pub(crate) left_out: Vec<(String, String)>,
    pub(crate) failures: Vec<String>,
    /// The machine of the figures; absent from a `run.json` written before it was kept.
    #[serde(default)]
    pub(crate) host: Option<Host>,
}

/// `Scale` as `"quick"` or `"full"` in `run.json`.
mod scale_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::workloads::Scale;

    pub(super) fn serialize<S: Serializer>(scale: &Scale, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(scale.pick("quick", "full"))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Scale, D::Error> {
        match String::deserialize(deserializer)?.as_str() {
            "quick" => Ok(Scale::Quick),
            "full" => Ok(Scale::Full),
            other => Err(serde::de::Error::custom(format!("mode {other:?} is neither quick nor full"))),
        }
    }
}

/// One record of `results.json`, as read back by `numaslab-bench report`.
#[derive(Debug, Deserialize)]
struct StoredRecord {
    workload: String,
    implementation: String,
    object_size: usize,
    median_ns_per_op: f64,
    peak_rss_bytes: u64,
    runs: usize,
    min_ns_per_op: f64,
    max_ns_per_op: f64,
    peak_rss_growth_bytes: u64,
    detail: String,
}

/// One record of `results.json`.
#[derive(Debug, Serialize)]
struct Record {
    workload: String,
    implementation: &'static str,
    object_size: usize,
    threads: usize,
    median_ns_per_op: f64,
    ops_per_sec: f64,
    peak_rss_bytes: u64,
    runs: usize,
    /// This median divided by the fastest peer's median (below 1: faster than every peer).
    ratio_to_best_peer: Option<f64>,
    best_peer: Option<&'static str>,
    min_ns_per_op: f64,
    max_ns_per_op: f64,
    peak_rss_growth_bytes: u64,
    detail: String,
}

/// The cases in the order they first appear.
fn cases_of(rows: &[Row]) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for row in rows {
        if !cases.contains(&row.case) {
            cases.push(row.case);
        }
    }
    cases
}

fn implementations_of(rows: &[Row]) -> Vec<ImplId> {
    let mut ids: Vec<ImplId> = rows.iter().map(|r| r.implementation).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn find(rows: &[Row], case: Case, id: ImplId) -> Option<&Row> {
    rows.iter().find(|r| r.case == case && r.implementation == id)
}

/// The fastest peer (not numaslab) on a case.
fn best_peer(rows: &[Row], case: Case) -> Option<&Row> {
    rows.iter()
        .filter(|r| r.case == case && !r.implementation.is_numaslab())
        .min_by(|a, b| a.median_ns.total_cmp(&b.median_ns))
}

/// The smallest peak resident set among the peers on a case.
fn best_peer_rss(rows: &[Row], case: Case) -> Option<&Row> {
    rows.iter().filter(|r| r.case == case && !r.implementation.is_numaslab()).min_by_key(|r| r.peak_rss)
}

fn ratio(rows: &[Row], row: &Row) -> Option<f64> {
    best_peer(rows, row.case).map(|best| row.median_ns / best.median_ns)
}

/// The issues' target for a workload, as a ratio to the fastest peer's time: the hot
/// pair and cross-node frees with none remote at most 0.80, producer/consumer at most
/// 0.83 (1.2x the fastest peer's throughput), cross-node frees with some remote at most
/// 1.00, batches and larson at most 1.10; cache-scratch and hotplug churn have none
/// against peers (workload 7's is against numaslab's own time without hotplug).
fn target(workload: Workload) -> &'static str {
    match workload {
        Workload::HotPair | Workload::CrossNode { remote_percent: 0 } => "at most 0.80",
        Workload::ProducerConsumer => "at most 0.83",
        Workload::CrossNode { .. } => "at most 1.00",
        Workload::Batch { .. } | Workload::Larson => "at most 1.10",
        Workload::CacheScratch | Workload::Hotplug(_) => "(reported)",
    }
}

fn case_label(case: Case) -> String {
    format!("{} {}B", case.workload.name(), case.size)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The table printed at the end of `drive`.
pub(crate) fn terminal_table(rows: &[Row], context: &Context) -> String {
    let ids = implementations_of(rows);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmedian ns per op over {} runs ({} mode; lower is better; * marks the fastest peer)",
        context.runs,
        context.scale.pick("quick", "full")
    );
    let _ = write!(out, "{:<32}", "case");
    for id in &ids {
        let _ = write!(out, "{:>10}", id.short_name());
    }
    out.push('\n');
    for case in cases_of(rows) {
        let _ = write!(out, "{:<32}", case_label(case));
        let best = best_peer(rows, case).map(|r| r.implementation);
        for &id in &ids {
            match find(rows, case, id) {
                Some(row) => {
                    let mark = if Some(id) == best { "*" } else { " " };
                    let _ = write!(out, "{:>9}{mark}", format_ns(row.median_ns));
                }
                None => {
                    let _ = write!(out, "{:>10}", "-");
                }
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "\nnumaslab against the fastest peer (time ratio below 1: faster than every peer; RSS: peak over the smallest peer peak)");
    let _ = writeln!(
        out,
        "{:<32}{:>22}{:>10}{:>10}{:>10}{:>10}{:>12}{:>12}{:>12}",
        "case", "fastest peer", "typed", "raw", "kmalloc", "global", "RSS typed", "RSS raw", "RSS kmalloc"
    );
    for case in cases_of(rows) {
        let Some(best) = best_peer(rows, case) else { continue };
        let best_rss = best_peer_rss(rows, case).map(|r| r.peak_rss);
        let time = |id| find(rows, case, id).map(|r: &Row| format!("{:.2}x", r.median_ns / best.median_ns));
        let memory = |id| {
            let row: &Row = find(rows, case, id)?;
            best_rss.map(|b| format!("{:.2}x", row.peak_rss as f64 / b as f64))
        };
        let _ = writeln!(
            out,
            "{:<32}{:>22}{:>10}{:>10}{:>10}{:>10}{:>12}{:>12}{:>12}",
            case_label(case),
            format!("{} {}", best.implementation.short_name(), format_ns(best.median_ns)),
            time(ImplId::NumaslabTyped).unwrap_or_else(|| "-".into()),
            time(ImplId::NumaslabRaw).unwrap_or_else(|| "-".into()),
            time(ImplId::NumaslabKmalloc).unwrap_or_else(|| "-".into()),
            time(ImplId::NumaslabGlobal).unwrap_or_else(|| "-".into()),
            memory(ImplId::NumaslabTyped).unwrap_or_else(|| "-".into()),
            memory(ImplId::NumaslabRaw).unwrap_or_else(|| "-".into()),
            memory(ImplId::NumaslabKmalloc).unwrap_or_else(|| "-".into()),
        );
    }
    for (name, reason) in &context.left_out {
        let _ = writeln!(out, "left out: {name}: {reason}");
    }
    out
}

fn format_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.0}us", ns / 1000.0)
    } else if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}

/// Writes `results.json`, `report.md` and the charts into `out_dir`.
pub(crate) fn write_all(out_dir: &Path, rows: &[Row], context: &Context) -> Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let records: Vec<Record> = rows
        .iter()
        .map(|row| Record {
            workload: row.case.workload.name(),
            implementation: row.implementation.name(),
            object_size: row.case.size,
            threads: row.case.workload.threads(),
            median_ns_per_op: row.median_ns,
            ops_per_sec: row.ops_per_sec(),
            peak_rss_bytes: row.peak_rss,
            runs: row.runs,
            ratio_to_best_peer: ratio(rows, row),
            best_peer: best_peer(rows, row.case).map(|b| b.implementation.name()),
            min_ns_per_op: row.min_ns,
            max_ns_per_op: row.max_ns,
            peak_rss_growth_bytes: row.rss_growth,
            detail: row.detail.clone(),
        })
        .collect();
    let json_path = out_dir.join("results.json");
    let json = serde_json::to_string_pretty(&records).context("encoding results.json")?;
    std::fs::write(&json_path, json + "\n").with_context(|| format!("writing {}", json_path.display()))?;

    let run_path = out_dir.join("run.json");
    let run = serde_json::to_string_pretty(context).context("encoding run.json")?;
    std::fs::write(&run_path, run + "\n").with_context(|| format!("writing {}", run_path.display()))?;

    let markdown = markdown(out_dir, rows, context)?;
    let md_path = out_dir.join("report.md");
    std::fs::write(&md_path, markdown).with_context(|| format!("writing {}", md_path.display()))?;
    Ok(())
}

/// Reads `results.json` and `run.json` back from `out_dir` (`numaslab-bench report`).
pub(crate) fn read_back(out_dir: &Path) -> Result<(Vec<Row>, Context)> {
    let json_path = out_dir.join("results.json");
    let text =
        std::fs::read_to_string(&json_path).with_context(|| format!("reading {}", json_path.display()))?;
    let records: Vec<StoredRecord> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json_path.display()))?;
    let rows = records
        .into_iter()
        .map(|record| {
            let workload = Workload::parse(&record.workload)?;
            Ok(Row {
                case: Case { workload, size: record.object_size },
                implementation: ImplId::parse(&record.implementation)?,
                median_ns: record.median_ns_per_op,
                min_ns: record.min_ns_per_op,
                max_ns: record.max_ns_per_op,
                peak_rss: record.peak_rss_bytes,
                rss_growth: record.peak_rss_growth_bytes,
                runs: record.runs,
                detail: record.detail,
            })
        })
        .collect::<Result<Vec<Row>>>()
        .with_context(|| format!("in {}", json_path.display()))?;
    let run_path = out_dir.join("run.json");
    let text =
        std::fs::read_to_string(&run_path).with_context(|| format!("reading {}", run_path.display()))?;
    let context = serde_json::from_str(&text).with_context(|| format!("parsing {}", run_path.display()))?;
    Ok((rows, context))
}

fn markdown(out_dir: &Path, rows: &[Row], context: &Context) -> Result<String> {
    let ids = implementations_of(rows);
    let mut md = String::new();
    let _ = writeln!(md, "# numaslab benchmark report\n");
    let _ = writeln!(
        md,
        "- mode: {} ({} runs per case and implementation, each in its own process; medians)",
        context.scale.pick("quick", "full"),
        context.runs
    );
    let machine = context
        .host
        .as_ref()
        .map_or_else(|| "not recorded (run.json predates host facts)".to_owned(), Host::summary);
    let _ = writeln!(md, "- machine: {machine}");
    let _ = writeln!(md, "- wall time of the whole run: {:.0} s", context.elapsed.as_secs_f64());
    let _ = writeln!(
        md,
        "- ratio: an implementation's median ns per operation divided by the fastest peer's \
         (peers: every implementation but numaslab); below 1.00 means faster than every peer"
    );
    let _ = writeln!(
        md,
        "- threads: workloads 1-5 run on this machine as sysfs describes it, each worker \
         pinned to its own CPU (`sched_setaffinity`), for every implementation alike; \
         workload 6 runs on this machine's CPUs laid out on two nodes (a fake on the live \
         CPUs: real pinning, and numaslab's rseq fast path where the machine allows it); \
         workload 7 on the seed box fake (4 CPUs on 2 nodes), whose CPUs are virtual: the \
         threads float over the real CPUs and numaslab runs its CAS fast path"
    );
    let _ = writeln!(
        md,
        "- malloc family: each allocator's `GlobalAlloc` impl called directly; the harness's \
         own vectors and channels use glibc in every run. rpmalloc's C sources interpose \
         `pthread_create` (an rpmalloc heap for every new thread) in the harness binary, so \
         that small cost is in every run, whichever implementation it measures"
    );
    for (name, reason) in &context.left_out {
        let _ = writeln!(md, "- left out: **{name}**: {reason}");
    }
    for failure in &context.failures {
        let _ = writeln!(md, "- FAILED run: {failure}");
    }

    let _ = writeln!(md, "\n## numaslab against the targets\n");
    let _ = writeln!(md, "| case | fastest peer | peer ns/op | typed | raw | kmalloc | global | target |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|");
    for case in cases_of(rows) {
        let Some(best) = best_peer(rows, case) else { continue };
        let target = target(case.workload);
        let cell = |id| {
            find(rows, case, id)
                .map_or_else(|| "-".to_string(), |r: &Row| format!("{:.2}", r.median_ns / best.median_ns))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {target} |",
            case_label(case),
            best.implementation.name(),
            format_ns(best.median_ns),
            cell(ImplId::NumaslabTyped),
            cell(ImplId::NumaslabRaw),
            cell(ImplId::NumaslabKmalloc),
            cell(ImplId::NumaslabGlobal),
        );
    }

    for (family, title) in FAMILIES {
        let cases: Vec<Case> = cases_of(rows).into_iter().filter(|c| c.workload.family() == family).collect();
        if cases.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n## {family}. {title}\n");
        let _ = writeln!(md, "One operation: {}.\n", cases[0].workload.op_meaning());
        let labels: Vec<String> =
            cases.iter().map(|c| format!("{} {}B", c.workload.label(), c.size).trim().to_string()).collect();
        let series: Vec<(ImplId, Vec<Option<f64>>)> = ids
            .iter()
            .map(|&id| (id, cases.iter().map(|&c| find(rows, c, id).and_then(|r| ratio(rows, r))).collect()))
            .collect();
        let file = format!("chart-{family}.svg");
        chart::family_chart(
            &out_dir.join(&file),
            &format!("{family}. {title}: time / fastest peer"),
            &labels,
            &series,
        )?;
        let _ = writeln!(md, "![{title}]({file})\n");
        table_header(&mut md, &ids);
        for (case, label) in cases.iter().zip(&labels) {
            let _ = write!(md, "| {label} |");
            for &id in &ids {
                match find(rows, *case, id) {
                    Some(row) => {
                        let r = ratio(rows, row).map_or(String::new(), |r| format!(" ({r:.2})"));
                        let _ = write!(md, " {} ns{r} |", format_ns(row.median_ns));
                    }
                    None => md.push_str(" - |"),
                }
            }
            md.push('\n');
        }
        let details: Vec<String> = cases
            .iter()
            .flat_map(|&case| rows.iter().filter(move |r| r.case == case && !r.detail.is_empty()))
            .map(|r| format!("{} {}: {}", case_label(r.case), r.implementation.name(), r.detail))
            .collect();
        if !details.is_empty() {
            let _ = writeln!(md, "\nDetails (median run): {}", details.join("; "));
        }
    }

    let _ = writeln!(md, "\n## Peak memory\n");
    let _ = writeln!(
        md,
        "Median peak resident set of the whole process in MiB (each run is its own process; \
         the harness itself accounts for the same baseline in every column), and in brackets \
         its growth during the run.\n"
    );
    table_header(&mut md, &ids);
    for case in cases_of(rows) {
        let _ = write!(md, "| {} |", case_label(case));
        for &id in &ids {
            match find(rows, case, id) {
                Some(row) => {
                    let _ = write!(md, " {:.1} ({:.1}) |", mib(row.peak_rss), mib(row.rss_growth));
                }
                None => md.push_str(" - |"),
            }
        }
        md.push('\n');
    }
    Ok(md)
}

/// Writes a Markdown table header: a `case` column, then one right-aligned column per
/// implementation.
fn table_header(md: &mut String, ids: &[ImplId]) {
    let _ = write!(md, "| case |");
    for id in ids {
        let _ = write!(md, " {} |", id.name());
    }
    let _ = write!(md, "\n|---|");
    for _ in ids {
        let _ = write!(md, "---:|");
    }
    md.push('\n');
}
