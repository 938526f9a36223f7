//! `numaslab topology`: the machine as a backend sees it, as text in the shape of
//! `numactl --hardware`, or as JSON, with the quirks the backend read leniently
//! (`--strict` refuses a machine that has any).

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use topology::{Diagnostic, NodeId, Topology};

use super::backend::{DefaultMachine, MachineArgs};

/// Which machine to describe; with none of `--root`, `--fixture`, `--fake`, this one.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    machine: MachineArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Refuse a machine whose files have quirks (listed as diagnostics otherwise): for
    /// validating captures. Exits with an error naming each file and its text.
    #[arg(long)]
    strict: bool,
}

/// Runs the command.
pub(crate) fn run(args: &Args) -> Result<()> {
    let machine = args.machine.open(DefaultMachine::Live)?;
    let diagnostics = machine.diagnostics();
    if args.strict && !diagnostics.is_empty() {
        let lines: Vec<String> = diagnostics.iter().map(|d| format!("  {d}")).collect();
        bail!(
            "--strict: {} reads only by {} documented interpretation(s):\n{}",
            machine.name(),
            diagnostics.len(),
            lines.join("\n")
        );
    }
    let report = Report::gather(machine.as_ref())?;
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&report.to_json())?;
        text.push('\n');
        text
    } else {
        report.to_text()
    };
    std::io::stdout().lock().write_all(text.as_bytes()).context("cannot write to stdout")
}

/// The facts printed, gathered once so that text and JSON agree.
struct Report {
    backend: String,
    possible_cpus: topology::CpuSet,
    present_cpus: topology::CpuSet,
    online_cpus: topology::CpuSet,
    allowed_cpus: topology::CpuSet,
    allowed_memory_nodes: topology::NodeSet,
    possible_nodes: topology::NodeSet,
    online_nodes: topology::NodeSet,
    nodes: Vec<NodeReport>,
    cpuless_nodes: Vec<NodeId>,
    memoryless_nodes: Vec<NodeId>,
    diagnostics: Vec<Diagnostic>,
}

struct NodeReport {
    id: NodeId,
    online: bool,
    cpus: topology::CpuSet,
    mem_total_kb: Option<u64>,
    /// To every possible node, in id order.
    distance: Vec<Option<u32>>,
    nearest_memory_node: Option<NodeId>,
}

impl Report {
    fn gather(machine: &dyn Topology) -> Result<Self> {
        let online_cpus = machine.online_cpus().context("cannot read the online cpus")?;
        let possible_nodes = machine.possible_nodes();
        let online_nodes = machine.online_nodes();
        let nodes = possible_nodes
            .iter()
            .map(|id| NodeReport {
                id,
                online: online_nodes.contains(id),
                cpus: machine.node_cpus(id),
                mem_total_kb: machine.node_mem_total_kb(id),
                distance: possible_nodes.iter().map(|to| machine.distance(id, to)).collect(),
                nearest_memory_node: machine.nearest_memory_node(id),
            })
            .collect();
        Ok(Self {
            backend: machine.name(),
            possible_cpus: machine.possible_cpus(),
            present_cpus: machine.present_cpus(),
            allowed_cpus: machine.allowed_cpus(),
            allowed_memory_nodes: machine.allowed_memory_nodes(),
            online_cpus,
            nodes,
            cpuless_nodes: machine.cpuless_nodes().iter().collect(),
            memoryless_nodes: machine.memoryless_nodes().iter().collect(),
            diagnostics: machine.diagnostics(),
            possible_nodes,
            online_nodes,
        })
    }

    /// `numactl --hardware`'s layout, plus the CPU sets it does not print.
    fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "machine: {}", self.backend);
        let _ = writeln!(out, "available: {} nodes ({})", self.online_nodes.len(), self.online_nodes);
        for node in &self.nodes {
            let state = if node.online { "" } else { " (offline)" };
            let cpus: Vec<String> = node.cpus.iter().map(|c| c.to_string()).collect();
            let _ = writeln!(out, "node {}{state} cpus: {}", node.id, cpus.join(" "));
            match node.mem_total_kb {
                Some(kb) => {
                    let _ = writeln!(out, "node {}{state} size: {} MB", node.id, kb / 1024);
                }
                None => {
                    let _ = writeln!(out, "node {}{state} size: unknown", node.id);
                }
            }
        }
        self.write_distances(&mut out);
        self.write_sets(&mut out);
        out
    }

    /// numactl's distance table.
    fn write_distances(&self, out: &mut String) {
        let _ = writeln!(out, "node distances:");
        let ids: Vec<NodeId> = self.possible_nodes.iter().collect();
        let width = ids.iter().map(|id| id.to_string().len()).max().unwrap_or(1).max(3);
        // numactl's layout: "node " then "% 3d " per column; rows "% 3d: " then "% 3d ".
        let mut header = "node ".to_owned();
        for id in &ids {
            let _ = write!(header, "{id:>width$} ");
        }
        let _ = writeln!(out, "{}", header.trim_end());
        for node in &self.nodes {
            let mut row = format!("{:>width$}: ", node.id);
            for distance in &node.distance {
                let cell = distance.map_or_else(|| "-".to_owned(), |d| d.to_string());
                let _ = write!(row, "{cell:>width$} ");
            }
            let _ = writeln!(out, "{}", row.trim_end());
        }
    }

    /// The CPU and node sets numactl does not print, and the diagnostics.
    fn write_sets(&self, out: &mut String) {
        let list =
            |set: &topology::CpuSet| if set.is_empty() { "(none)".to_owned() } else { set.to_string() };
        let ids_text = |ids: &[NodeId]| {
            if ids.is_empty() {
                "(none)".to_owned()
            } else {
                ids.iter().map(|id| id.to_string()).collect::<Vec<_>>().join(" ")
            }
        };
        let _ = writeln!(out, "possible cpus: {}", list(&self.possible_cpus));
        let _ = writeln!(out, "present cpus: {}", list(&self.present_cpus));
        let _ = writeln!(out, "online cpus: {}", list(&self.online_cpus));
        let _ = writeln!(out, "offline cpus: {}", list(&self.possible_cpus.difference(&self.online_cpus)));
        let _ = writeln!(out, "allowed cpus: {}", list(&self.allowed_cpus));
        // numactl --show calls these "membind" (for the default policy).
        let _ = writeln!(out, "allowed memory nodes: {}", list(&self.allowed_memory_nodes));
        let _ = writeln!(out, "cpu-less nodes: {}", ids_text(&self.cpuless_nodes));
        let _ = writeln!(out, "memory-less nodes: {}", ids_text(&self.memoryless_nodes));
        if self.diagnostics.is_empty() {
            let _ = writeln!(out, "diagnostics: (none)");
        } else {
            let _ =
                writeln!(out, "diagnostics: {} (read by documented interpretations)", self.diagnostics.len());
            for diagnostic in &self.diagnostics {
                let _ = writeln!(out, "  {diagnostic}");
            }
        }
    }

    /// The JSON form. `nodes` is keyed by node id (every possible node); each node's
    /// `distance` lists its distance to every possible node in ascending id order, the
    /// order of `possible_nodes`, with `null` where the backend does not know it.
    fn to_json(&self) -> Value {
        let mut nodes = Map::new();
        for node in &self.nodes {
            nodes.insert(
                node.id.to_string(),
                json!({
                    "online": node.online,
                    "cpus": node.cpus.to_string(),
                    "mem_total_kb": node.mem_total_kb,
                    "distance": node.distance,
                    "nearest_memory_node": node.nearest_memory_node,
                }),
            );
        }
        json!({
            "backend": self.backend,
            "possible_cpus": self.possible_cpus.to_string(),
            "present_cpus": self.present_cpus.to_string(),
            "online_cpus": self.online_cpus.to_string(),
            "offline_cpus": self.possible_cpus.difference(&self.online_cpus).to_string(),
            "allowed_cpus": self.allowed_cpus.to_string(),
            "allowed_memory_nodes": self.allowed_memory_nodes.to_string(),
            "possible_nodes": self.possible_nodes.to_string(),
            "online_nodes": self.online_nodes.to_string(),
            "node_ids": self.possible_nodes.iter().collect::<Vec<_>>(),
            "nodes": nodes,
            "cpuless_nodes": self.cpuless_nodes,
            "memoryless_nodes": self.memoryless_nodes,
            "diagnostics": self.diagnostics,
        })
    }
}
