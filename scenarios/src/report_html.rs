//! A failing run as one self-contained HTML page: a timeline of clients, nodes and objects beside the trace.
//!
//! [`render`] turns a [`RunFailure`] and the clients' operations ([`OpView`], from a [`History`]) into a single
//! HTML file with its CSS and JS inline (no network, no external fonts). The page shows:
//! - a header: seed, failure kind and message, trace hash, options, the replay command and the fault counts;
//! - the violation: the evidence lines in a box (`id="violation"`);
//! - a timeline in simulated milliseconds, one lane per client (its operations as bars coloured by outcome),
//!   per node (crashes, power cuts, restarts, pauses, disk syncs and commits, faults naming it), per object
//!   (the runtime's and storage's log lines that name it: events delivered..done, starts, resets, evictions,
//!   applied commits), and a `network` lane for the faults of the fabric; messages are lines from the sender's
//!   node lane to the receiver's (drops marked); the evidence window is shaded and the operations the violation
//!   names are outlined in red (`class~="violation"`);
//! - the trace as text in a scrollable, filterable panel; clicking a timeline item scrolls it to that event.
//!
//! The Rust side sorts the trace into lanes and items and embeds them as compact JSON; the page's script draws
//! them (fast for tens of thousands of events). The static HTML already holds the header, the violation box and
//! every lane's container (`data-lane="client-0"`, `"node-n1"`, `"object-Counter/0123456789ab"`, `"network"`), so
//! it reads without the script too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use dosim_sim::{DiskOp, Event, EventKind, Evidence, NodeAction, NodeId, RunFailure};
use serde_json::{json, Value};

use crate::history::{History, OpId};

/// The page's stylesheet.
const CSS: &str = include_str!("report_html/page.css");
/// The page's script: draws the timeline and the log from the embedded data.
const JS: &str = include_str!("report_html/page.js");

/// One client operation as the page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpView {
    /// Its place in the history (`op#id`).
    pub id: usize,
    /// The client that made it: its lane.
    pub client: u32,
    /// The object it was made on.
    pub object: String,
    /// What was asked, as text.
    pub input: String,
    /// How it ended, as text: starts with `ok`, `error` or `unknown`, as [`crate::history::Outcome`]'s display does.
    pub outcome: String,
    /// When the client invoked it.
    pub invoked: Duration,
    /// When it completed (`None`: still open at the end).
    pub completed: Option<Duration>,
    /// Whether the violation names it (outlined in red).
    pub highlighted: bool,
}

/// How an operation ended, for its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpStatus {
    /// It returned a value.
    Ok,
    /// It failed with an error.
    Error,
    /// No answer (or still open).
    Unknown,
}

impl OpStatus {
    /// Its CSS class: `ok`, `error` or `unknown`.
    pub fn class(self) -> &'static str {
        match self {
            OpStatus::Ok => "ok",
            OpStatus::Error => "error",
            OpStatus::Unknown => "unknown",
        }
    }
}

impl OpView {
    /// Every operation of `history`, those whose ids are in `highlighted` marked.
    pub fn from_history<I: fmt::Debug, O: fmt::Debug>(
        history: &History<I, O>,
        highlighted: &BTreeSet<OpId>,
    ) -> Vec<OpView> {
        history
            .ops()
            .iter()
            .map(|op| OpView {
                id: op.id.0,
                client: op.client,
                object: op.object.clone(),
                input: format!("{:?}", op.input),
                outcome: match op.completed {
                    None => "unknown (open)".to_string(),
                    Some(_) => op.outcome.to_string(),
                },
                invoked: op.invoked,
                completed: op.completed,
                highlighted: highlighted.contains(&op.id),
            })
            .collect()
    }

    /// How it ended, read from [`OpView::outcome`]: `ok…`, `error…`, anything else unknown.
    pub fn status(&self) -> OpStatus {
        if self.completed.is_none() {
            OpStatus::Unknown
        } else if self.outcome.starts_with("ok") {
            OpStatus::Ok
        } else if self.outcome.starts_with("error") {
            OpStatus::Error
        } else {
            OpStatus::Unknown
        }
    }
}

/// The operations `evidence` names: every `op#N` in its lines (how [`crate::history::Operation`] displays), for
/// [`OpView::from_history`]'s highlighted set.
pub fn named_ops(evidence: &Evidence) -> BTreeSet<OpId> {
    let mut ids = BTreeSet::new();
    for line in &evidence.lines {
        for (i, _) in line.match_indices("op#") {
            if line[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric()) {
                continue;
            }
            let digits: String = line[i + 3..].chars().take_while(|c| c.is_ascii_digit()).collect();
            if let Ok(n) = digits.parse() {
                ids.insert(OpId(n));
            }
        }
    }
    ids
}

/// What the page says beyond the failure itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportMeta {
    /// The page's title (the scenario or test name); empty for a generic one.
    pub title: String,
    /// The command that replays the failing seed, if known.
    pub replay: Option<String>,
}

/// The page of `failure`, with the clients' operations `ops`, titled and with a replay command by `meta`.
pub fn render(failure: &RunFailure, ops: &[OpView], meta: &ReportMeta) -> String {
    let model = Model::build(failure, ops);
    let mut out = String::with_capacity(4096 + failure.trace.events().len() * 120);
    let title = if meta.title.is_empty() { "dosim failure".to_string() } else { meta.title.clone() };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} — seed {}</title><style>{CSS}</style></head>\n<body>\n",
        esc(&title),
        failure.seed
    );
    header(&mut out, failure, &title, meta);
    violation(&mut out, failure, ops);
    out.push_str("<main id=\"main\">\n<section id=\"timeline-pane\">\n");
    out.push_str(
        "<div id=\"toolbar\"><button id=\"zoom-out\" title=\"zoom out (-)\">−</button>\
         <button id=\"zoom-in\" title=\"zoom in (+)\">+</button><button id=\"zoom-fit\">whole run</button>\
         <button id=\"zoom-window\">violation window</button>\
         <label><input type=\"checkbox\" id=\"show-msgs\" checked> messages</label>\
         <span id=\"scale\"></span><span id=\"hover\"></span></div>\n",
    );
    out.push_str("<div id=\"timeline\"><div id=\"axis-row\" class=\"row\"><div class=\"lane-name\">ms</div>");
    out.push_str("<div id=\"axis\" class=\"track\"></div></div>\n");
    for lane in &model.lanes {
        let _ = writeln!(
            out,
            "<div class=\"row {}\"><div class=\"lane-name\" title=\"{}\">{}</div>\
             <div class=\"track\" data-lane=\"{}\"></div></div>",
            lane.group,
            esc(&lane.id),
            esc(&lane.name),
            esc(&lane.id)
        );
    }
    out.push_str("<svg id=\"wires\"></svg>\n");
    out.push_str("</div>\n<div id=\"legend\">");
    for (class, text) in LEGEND {
        let _ = write!(out, "<span><i class=\"{class}\"></i>{text}</span>");
    }
    out.push_str("</div>\n</section>\n");
    out.push_str(
        "<section id=\"log-pane\"><div id=\"log-bar\"><input id=\"filter\" type=\"search\" \
         placeholder=\"filter the trace (text, e.g. n1 or reset)\"><span id=\"log-count\"></span></div>\
         <div id=\"log\"><noscript>The trace panel and the timeline's items need JavaScript; \
         the trace is in the page's data as JSON.</noscript></div></section>\n</main>\n",
    );
    // No `<` inside the script element at all (`</script>`, `<!--` in a log line): JSON's own escape for it.
    let data = serde_json::to_string(&model.data).expect("the model serialises").replace('<', "\\u003c");
    let _ =
        write!(out, "<script id=\"data\" type=\"application/json\">{data}</script>\n<script>{JS}</script>\n");
    out.push_str("</body></html>\n");
    out
}

/// The legend: CSS class of a swatch and what it means.
const LEGEND: &[(&str, &str)] = &[
    ("op ok", "op ok"),
    ("op error", "op error"),
    ("op unknown", "op unknown"),
    ("op ok violation", "named by the violation"),
    ("span down", "node down"),
    ("span paused", "node paused"),
    ("mark crash", "crash / power cut"),
    ("mark restart", "restart"),
    ("mark fault", "fault"),
    ("mark sync", "disk sync / commit"),
    ("span event", "object event"),
    ("mark reset", "reset / evicted"),
    ("mark applied", "applied commit"),
    ("wire-swatch", "message"),
    ("wire-swatch drop", "dropped message"),
    ("shade", "violation window"),
];

fn header(out: &mut String, f: &RunFailure, title: &str, meta: &ReportMeta) {
    let _ = write!(
        out,
        "<header id=\"header\"><h1>{}</h1><div class=\"kind {}\">{}</div>\n<div class=\"facts\">",
        esc(title),
        f.kind.class().name(),
        esc(&f.kind.to_string())
    );
    let mut row = |k: &str, v: &str| {
        let wrap = if k == "options" || k == "faults" { " wrap" } else { "" };
        let _ = write!(out, "<span class=\"fact{wrap}\"><span class=\"k\">{}:</span> {}</span>", esc(k), v);
    };
    row("seed", &format!("<code id=\"seed\">{}</code>", f.seed));
    row("class", f.kind.class().name());
    row("trace hash", &format!("<code>{:016x}</code> ({} events)", f.trace_hash(), f.trace.len()));
    row("sim time", &esc(&format!("{:?}", f.sim_time)));
    if let Some(replay) = &meta.replay {
        row("replay", &format!("<code id=\"replay\">{}</code>", esc(replay)));
    }
    let faults: Vec<String> =
        f.faults.iter().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k}={n}")).collect();
    row("faults", &esc(&if faults.is_empty() { "none".to_string() } else { faults.join(" ") }));
    if !f.options.is_empty() {
        let opts: Vec<String> =
            f.options.iter().map(|(k, v)| format!("<code>{}={}</code>", esc(k), esc(v))).collect();
        row("options", &opts.join(" "));
    }
    if !f.trace.is_full() {
        row("note", "the run kept only the trace's tail (hash-only mode): replay it for the whole timeline");
    }
    out.push_str("</div></header>\n");
}

fn violation(out: &mut String, f: &RunFailure, ops: &[OpView]) {
    out.push_str("<section id=\"violation\"><h2>Behind the violation</h2>");
    let _ = write!(out, "<p class=\"message\">{}</p>", esc(&f.kind.to_string()));
    if f.evidence.lines.is_empty() {
        out.push_str("<p class=\"none\">The check named no evidence.</p>");
    } else {
        out.push_str("<ol class=\"evidence\">");
        for line in &f.evidence.lines {
            let _ = write!(out, "<li>{}</li>", esc(line));
        }
        out.push_str("</ol>");
    }
    if let Some((a, b)) = f.evidence.window {
        let _ = write!(out, "<p class=\"window\">window: {} ms to {} ms (shaded)</p>", ms(a), ms(b));
    }
    let named: Vec<String> = ops.iter().filter(|o| o.highlighted).map(|o| format!("op#{}", o.id)).collect();
    if !named.is_empty() {
        let _ = write!(out, "<p class=\"ops\">operations outlined in red: {}</p>", esc(&named.join(", ")));
    }
    out.push_str("</section>\n");
}

/// Milliseconds with three decimals.
fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_nanos() as f64 / 1e6)
}

/// HTML-escapes text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A lane of the timeline.
struct Lane {
    /// Its `data-lane` value.
    id: String,
    /// What its row is labelled.
    name: String,
    /// Its group's CSS class: `clients`, `nodes`, `network` or `objects`.
    group: &'static str,
}

/// The lanes and the data the script draws.
struct Model {
    lanes: Vec<Lane>,
    data: Value,
}

/// Nanoseconds as a JSON number (exact up to 2^53 ns, 104 days of simulated time).
fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The object label a log line names: a `Class/0123456789ab` word.
fn label_in(text: &str) -> Option<&str> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == ':' || c == ';' || c == '(' || c == ')')
        .find(|w| is_label(w))
}

fn is_label(w: &str) -> bool {
    let Some((class, hex)) = w.split_once('/') else { return false };
    !class.is_empty()
        && class.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && class.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && hex.len() == 12
        && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// The first 12 hex digits of a long hex id in `text` (an object's full id, in storage and directory keys).
fn id_prefix_in(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_hexdigit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            if i - start >= 32 && (i == bytes.len() || !bytes[i].is_ascii_alphanumeric()) {
                return Some(&text[start..start + 12]);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The nodes a fault's detail names (`n0`, `{n1,n2}`).
fn nodes_in(detail: &str) -> Vec<NodeId> {
    let mut out = Vec::new();
    for w in detail.split(|c: char| !c.is_ascii_alphanumeric()) {
        if let Some(n) = w.strip_prefix('n').and_then(|d| d.parse::<u32>().ok()) {
            if !out.contains(&NodeId(n)) {
                out.push(NodeId(n));
            }
        }
    }
    out
}

/// Items and messages the script draws, in compact arrays.
#[derive(Default)]
struct Items {
    /// `[lane, t0, t1 (-1: a point), class, text, seq (-1: none)]`, and for an operation its short label.
    items: Vec<Value>,
    /// `[from lane, to lane, sent, arrived, class, seq of the send]`.
    msgs: Vec<Value>,
}

impl Items {
    fn point(&mut self, lane: usize, at: u64, class: &str, text: String, seq: u64) {
        self.items.push(json!([lane, at, -1, class, text, seq]));
    }
    fn span(&mut self, lane: usize, from: u64, to: u64, class: &str, text: String, seq: i64) {
        self.items.push(json!([lane, from, to, class, text, seq]));
    }
}

impl Model {
    fn build(f: &RunFailure, ops: &[OpView]) -> Model {
        let events = f.trace.events();
        let end = ns(f.sim_time).max(events.last().map_or(0, |e| ns(e.at)));
        // The lanes: clients, nodes, the network, objects.
        let clients: BTreeSet<u32> = ops.iter().map(|o| o.client).collect();
        let mut nodes: BTreeSet<NodeId> = BTreeSet::new();
        let mut labels: BTreeMap<String, String> = BTreeMap::new(); // hex12 -> label
        let mut network = false;
        for e in events {
            nodes.extend(e.node);
            match &e.kind {
                EventKind::Send { from, to, .. } => {
                    nodes.insert(from.node);
                    nodes.insert(to.node);
                }
                EventKind::Deliver { to, .. } => {
                    nodes.insert(to.node);
                }
                EventKind::Fault { detail, .. } => {
                    network = true;
                    nodes.extend(nodes_in(detail));
                }
                EventKind::Log { text, .. } => {
                    if let Some(l) = label_in(text) {
                        let hex = &l[l.len() - 12..];
                        labels.entry(hex.to_string()).or_insert_with(|| l.to_string());
                    }
                }
                _ => {}
            }
        }
        // Objects only storage or directory lines name (by full id) get a lane of their own too.
        for e in events {
            if let EventKind::Log { text, .. } = &e.kind {
                if label_in(text).is_none() {
                    if let Some(hex) = id_prefix_in(text) {
                        labels.entry(hex.to_string()).or_insert_with(|| hex.to_string());
                    }
                }
            }
        }
        let mut lanes = Vec::new();
        let mut client_lane = BTreeMap::new();
        for c in &clients {
            client_lane.insert(*c, lanes.len());
            lanes.push(Lane { id: format!("client-{c}"), name: format!("client {c}"), group: "clients" });
        }
        let mut node_lane = BTreeMap::new();
        for n in &nodes {
            node_lane.insert(*n, lanes.len());
            lanes.push(Lane { id: format!("node-{n}"), name: format!("node {n}"), group: "nodes" });
        }
        let network_lane = network.then(|| {
            lanes.push(Lane { id: "network".into(), name: "network".into(), group: "network" });
            lanes.len() - 1
        });
        let mut object_lane = BTreeMap::new(); // hex12 -> lane
        let mut by_label: BTreeMap<&str, &str> = BTreeMap::new();
        for (hex, label) in &labels {
            by_label.insert(label.as_str(), hex.as_str());
        }
        for (label, hex) in &by_label {
            object_lane.insert(hex.to_string(), lanes.len());
            lanes.push(Lane { id: format!("object-{label}"), name: (*label).to_string(), group: "objects" });
        }

        let mut it = Items::default();
        // Clients' operations.
        for o in ops {
            let lane = client_lane[&o.client];
            let class = format!("op {}{}", o.status().class(), if o.highlighted { " violation" } else { "" });
            let done = o.completed.map_or_else(|| "open".to_string(), |c| format!("{} ms", ms(c)));
            let text = format!(
                "op#{} client {} on {}: {} [{} ms .. {}] -> {}",
                o.id,
                o.client,
                o.object,
                o.input,
                ms(o.invoked),
                done,
                o.outcome
            );
            let to = o.completed.map_or(end, ns);
            let short = o.outcome.split(" [").next().unwrap_or_default();
            let label = format!("op#{} {} → {short}", o.id, o.input.trim_matches('"'));
            it.items.push(json!([lane, ns(o.invoked), to, class, text, -1, label]));
        }
        // Nodes, the network, objects and messages, from the trace.
        let mut down: BTreeMap<NodeId, (u64, u64, &'static str)> = BTreeMap::new(); // since, seq, class
        let mut paused: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        let mut sends: BTreeMap<u64, (usize, usize, u64, u64)> = BTreeMap::new(); // msg -> from, to, at, seq
        let mut open_events: OpenEvents = BTreeMap::new();
        let lane_of_node = |n: Option<NodeId>| n.and_then(|n| node_lane.get(&n).copied());
        for e in events {
            let at = ns(e.at);
            let text = e.kind.to_string();
            match &e.kind {
                EventKind::Node(action) => {
                    let Some(lane) = lane_of_node(e.node) else { continue };
                    let node = e.node.expect("a node lane has a node");
                    let class = match action {
                        NodeAction::Start => "mark start",
                        NodeAction::Crash => "mark crash",
                        NodeAction::PowerCut => "mark crash powercut",
                        NodeAction::Restart => "mark restart",
                        NodeAction::Pause => "mark pause",
                        NodeAction::Resume => "mark resume",
                    };
                    it.point(lane, at, class, text, e.seq);
                    match action {
                        NodeAction::Crash | NodeAction::PowerCut => {
                            // The object events the node was running die with it.
                            let dead: Vec<(usize, String)> = open_events
                                .iter()
                                .filter(|(_, v)| v.3 == Some(node))
                                .map(|(k, _)| k.clone())
                                .collect();
                            for key in dead {
                                if let Some((since, seq, started, _)) = open_events.remove(&key) {
                                    let text = format!("{started} (cut short by the {action:?} of {node})");
                                    it.span(key.0, since, at, "span event cut", text, seq as i64);
                                }
                            }
                            if let Some((since, seq)) = paused.remove(&node) {
                                it.span(lane, since, at, "span paused", "paused".into(), seq as i64);
                            }
                            let what = if *action == NodeAction::Crash {
                                "down (crashed)"
                            } else {
                                "down (power cut)"
                            };
                            down.insert(node, (at, e.seq, what));
                        }
                        NodeAction::Restart => {
                            if let Some((since, seq, what)) = down.remove(&node) {
                                it.span(lane, since, at, "span down", what.into(), seq as i64);
                            }
                        }
                        NodeAction::Pause => {
                            paused.insert(node, (at, e.seq));
                        }
                        NodeAction::Resume => {
                            if let Some((since, seq)) = paused.remove(&node) {
                                it.span(lane, since, at, "span paused", "paused".into(), seq as i64);
                            }
                        }
                        NodeAction::Start => {}
                    }
                }
                EventKind::Fault { detail, .. } => {
                    if let Some(lane) = network_lane {
                        it.point(lane, at, "mark fault", text.clone(), e.seq);
                    }
                    for n in nodes_in(detail) {
                        if let Some(lane) = node_lane.get(&n) {
                            it.point(*lane, at, "mark fault", text.clone(), e.seq);
                        }
                    }
                }
                EventKind::Disk { op: DiskOp::Sync, ok, .. } => {
                    if let Some(lane) = lane_of_node(e.node) {
                        it.point(lane, at, if *ok { "mark sync" } else { "mark sync failed" }, text, e.seq);
                    }
                }
                EventKind::Disk { ok: false, .. } => {
                    if let Some(lane) = lane_of_node(e.node) {
                        it.point(lane, at, "mark diskfail", text, e.seq);
                    }
                }
                EventKind::DiskCrash(_) => {
                    if let Some(lane) = lane_of_node(e.node) {
                        it.point(lane, at, "mark diskcrash", text, e.seq);
                    }
                }
                EventKind::Send { msg, from, to, .. } => {
                    if let (Some(a), Some(b)) = (node_lane.get(&from.node), node_lane.get(&to.node)) {
                        sends.insert(*msg, (*a, *b, at, e.seq));
                    }
                }
                EventKind::Duplicate { msg, copy } => {
                    if let Some(s) = sends.get(msg).copied() {
                        sends.insert(*copy, s);
                    }
                }
                EventKind::Deliver { msg, .. } => {
                    if let Some((a, b, sent, seq)) = sends.get(msg).copied() {
                        it.msgs.push(json!([a, b, sent, at, "wire", seq]));
                    }
                }
                EventKind::Drop { msg, .. } => {
                    if let Some((a, b, sent, seq)) = sends.get(msg).copied() {
                        it.msgs.push(json!([a, b, sent, at, "wire drop", seq]));
                        it.point(b, at, "mark drop", text, e.seq);
                    }
                }
                EventKind::Hold { msg } => {
                    if let Some((_, b, _, _)) = sends.get(msg).copied() {
                        it.point(b, at, "mark hold", text, e.seq);
                    }
                }
                EventKind::Log { target, text: line } => {
                    object_item(&mut it, &mut open_events, &object_lane, e, target, line, at);
                    if target == "dosim::storage" && (line == "commit" || line.starts_with("commit failed")) {
                        if let Some(lane) = lane_of_node(e.node) {
                            it.point(lane, at, "mark sync commit", text, e.seq);
                        }
                    }
                }
                EventKind::Disk { .. } | EventKind::Note { .. } => {}
            }
        }
        for (node, (since, seq, what)) in down {
            it.span(node_lane[&node], since, end, "span down", what.into(), seq as i64);
        }
        for (node, (since, seq)) in paused {
            it.span(node_lane[&node], since, end, "span paused", "paused".into(), seq as i64);
        }
        for ((lane, id), (since, seq, text, _)) in open_events {
            it.span(
                lane,
                since,
                end,
                "span event open",
                format!("{text} (not done: event {id})"),
                seq as i64,
            );
        }
        let log: Vec<Value> = events.iter().map(log_row).collect();
        let data = json!({
            "end": end,
            "window": f.evidence.window.map(|(a, b)| json!([ns(a), ns(b)])),
            "lanes": lanes.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
            "items": it.items,
            "msgs": it.msgs,
            "log": log,
        });
        Model { lanes, data }
    }
}

/// A trace event as a log row: `[seq, at, node (-1: none), text]`.
fn log_row(e: &Event) -> Value {
    let node = e.node.map_or(-1, |n| i64::from(n.0));
    json!([e.seq, ns(e.at), node, e.kind.to_string()])
}

/// The object events delivered and not yet done, by lane and event number: since, seq, text, node.
type OpenEvents = BTreeMap<(usize, String), (u64, u64, String, Option<NodeId>)>;

/// The object-lane item of a log line, if it names an object.
fn object_item(
    it: &mut Items,
    open: &mut OpenEvents,
    object_lane: &BTreeMap<String, usize>,
    e: &Event,
    target: &str,
    line: &str,
    at: u64,
) {
    let hex = match label_in(line) {
        Some(l) => &l[l.len() - 12..],
        None => match id_prefix_in(line) {
            Some(h) => h,
            None => return,
        },
    };
    let Some(&lane) = object_lane.get(hex) else { return };
    let text = format!("{}{}: {line}", target, e.node.map(|n| format!(" on {n}")).unwrap_or_default());
    // `<label> event N delivered (...)` opens a span that `<label> event N done` closes.
    let words: Vec<&str> = line.split_whitespace().collect();
    if words.len() >= 4 && words[1] == "event" && (words[3] == "delivered" || words[3] == "done") {
        let key = (lane, words[2].to_string());
        if words[3] == "delivered" {
            open.insert(key, (at, e.seq, text, e.node));
        } else if let Some((since, seq, started, _)) = open.remove(&key) {
            it.span(lane, since, at, "span event", started, seq as i64);
        } else {
            it.point(lane, at, "mark other", text, e.seq);
        }
        return;
    }
    let class = if line.contains(" reset: ") || line.contains(" reset ") {
        "mark reset"
    } else if line.ends_with(" evicted") {
        "mark reset evicted"
    } else if line.ends_with(" starts") {
        "mark restart objstart"
    } else if line.starts_with("applied ") || line.starts_with("kv commit ") {
        "mark applied"
    } else if line.contains(" owns ") {
        "mark owns"
    } else if line.starts_with("opened ") || line.starts_with("kv opened ") {
        "mark opened"
    } else if target == "dosim::storage" {
        "mark storage"
    } else {
        "mark other"
    };
    it.point(lane, at, class, text, e.seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dosim_sim::{
        Addr, DropReason, Evidence, FailureKind, FaultCounts, RunOptions, Seed, Trace, TraceMode,
    };

    const LABEL: &str = "Counter/0123456789ab";

    fn failure(trace: Trace, evidence: Evidence) -> RunFailure {
        RunFailure {
            seed: Seed(9),
            kind: FailureKind::Check("lost an add".into()),
            options: RunOptions::new(Seed(9)).with("faults", "power-cut"),
            trace,
            faults: FaultCounts::default(),
            sim_time: Duration::from_millis(100),
            wall_time: Duration::ZERO,
            evidence,
        }
    }

    fn log(text: &str) -> EventKind {
        EventKind::Log { target: "dosim::runtime".into(), text: text.into() }
    }

    /// The items of the page's data whose class starts with `class`, as `(lane id, t0 ms, t1 ms or -1)`.
    fn items(model: &Model, class: &str) -> Vec<(String, u64, i64)> {
        let lanes = model.data["lanes"].as_array().unwrap();
        model.data["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i[3].as_str().unwrap().starts_with(class))
            .map(|i| {
                let lane = lanes[i[0].as_u64().unwrap() as usize].as_str().unwrap().to_string();
                let t1 = i[2].as_i64().unwrap();
                (lane, i[1].as_u64().unwrap() / 1_000_000, if t1 < 0 { -1 } else { t1 / 1_000_000 })
            })
            .collect()
    }

    #[test]
    fn the_trace_sorts_into_lanes_spans_and_messages() {
        let at = Duration::from_millis;
        let mut t = Trace::new(TraceMode::Full);
        let (n0, n1) = (NodeId(0), NodeId(1));
        let a = Addr { node: n1, port: 8 };
        let b = Addr { node: n0, port: 7 };
        t.record(at(1), Some(n0), log(&format!("{LABEL} event 1 delivered (rpc add(1))")));
        t.record(at(2), Some(n1), EventKind::Send { msg: 1, from: a, to: b, len: 3, digest: 0 });
        t.record(at(3), None, EventKind::Deliver { msg: 1, to: b });
        t.record(at(4), Some(n0), log(&format!("{LABEL} event 1 done")));
        t.record(at(5), Some(n0), log(&format!("{LABEL} event 2 delivered (rpc add(1))")));
        t.record(at(6), Some(n0), EventKind::Node(NodeAction::PowerCut));
        t.record(at(7), Some(n1), EventKind::Send { msg: 2, from: a, to: b, len: 3, digest: 0 });
        t.record(at(8), None, EventKind::Drop { msg: 2, reason: DropReason::ReceiverDown });
        let partition =
            EventKind::Fault { kind: dosim_sim::FaultKind::Partition, detail: "{n0} -> {n1}".into() };
        t.record(at(9), None, partition);
        t.record(at(20), Some(n0), EventKind::Node(NodeAction::Restart));
        let full = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let applied = format!("applied ns/{full} epoch=2 version=1");
        t.record(at(21), None, EventKind::Log { target: "dosim::storage_node".into(), text: applied });
        t.record(at(30), Some(n1), EventKind::Node(NodeAction::Pause));
        let ops = [OpView {
            id: 0,
            client: 3,
            object: "c".into(),
            input: "\"add(1)\"".into(),
            outcome: "ok 1".into(),
            invoked: at(1),
            completed: Some(at(5)),
            highlighted: true,
        }];
        let f = failure(t, Evidence { lines: vec!["op#0 lost".into()], window: Some((at(1), at(5))) });
        let model = Model::build(&f, &ops);
        let lanes: Vec<&str> = model.lanes.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(lanes, ["client-3", "node-n0", "node-n1", "network", "object-Counter/0123456789ab"]);
        let object = "object-Counter/0123456789ab".to_string();
        assert_eq!(items(&model, "op ok violation"), [("client-3".to_string(), 1, 5)]);
        assert_eq!(items(&model, "span event cut"), [(object.clone(), 5, 6)], "event 2 dies with n0");
        assert_eq!(items(&model, "span event"), [(object.clone(), 1, 4), (object.clone(), 5, 6)]);
        assert_eq!(items(&model, "span down"), [("node-n0".to_string(), 6, 20)]);
        assert_eq!(items(&model, "span paused"), [("node-n1".to_string(), 30, 100)], "paused to the end");
        assert_eq!(items(&model, "mark applied"), [(object, 21, -1)], "the full id maps to the label's lane");
        let faults = items(&model, "mark fault");
        assert_eq!(faults.len(), 3, "on the network lane and both named nodes: {faults:?}");
        let msgs = model.data["msgs"].as_array().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], json!([2, 1, 2_000_000, 3_000_000, "wire", 1]), "n1 -> n0, sent at 2, in at 3");
        assert_eq!(msgs[1][4], "wire drop");
        let html =
            render(&f, &ops, &ReportMeta { title: "t".into(), replay: Some("dosim replay <x>".into()) });
        assert!(
            html.contains("<code id=\"replay\">dosim replay &lt;x&gt;</code>"),
            "the replay command, escaped"
        );
        assert!(html.contains("<code>faults=power-cut</code>"), "the options");
        assert!(html.contains("<li>op#0 lost</li>"), "the evidence");
    }

    #[test]
    fn a_script_end_tag_in_the_trace_cannot_close_the_data() {
        let mut t = Trace::new(TraceMode::Full);
        t.record(Duration::ZERO, None, log("</script><script>alert(1)</script>"));
        let html = render(&failure(t, Evidence::default()), &[], &ReportMeta::default());
        assert_eq!(html.matches("</script>").count(), 2, "only the page's own two scripts end");
        assert!(html.contains("\\u003c/script>\\u003cscript>alert(1)\\u003c/script>"));
    }

    #[test]
    fn twenty_thousand_events_make_a_page_of_a_few_megabytes() {
        let mut t = Trace::new(TraceMode::Full);
        let (a, b) = (Addr { node: NodeId(1), port: 8 }, Addr { node: NodeId(0), port: 7 });
        for i in 0..5_000u64 {
            let at = Duration::from_micros(i * 100);
            let us = Duration::from_micros;
            t.record(at, Some(NodeId(1)), EventKind::Send { msg: i, from: a, to: b, len: 9, digest: i });
            t.record(at + us(30), None, EventKind::Deliver { msg: i, to: b });
            t.record(at + us(40), Some(NodeId(0)), log(&format!("{LABEL} event {i} delivered (rpc add(1))")));
            t.record(at + us(60), Some(NodeId(0)), log(&format!("{LABEL} event {i} done")));
        }
        let ops: Vec<OpView> = (0..2_000u64)
            .map(|i| OpView {
                id: i as usize,
                client: (i % 4) as u32,
                object: "c".into(),
                input: "add".into(),
                outcome: "ok 1".into(),
                invoked: Duration::from_micros(i * 250),
                completed: Some(Duration::from_micros(i * 250 + 200)),
                highlighted: i == 7,
            })
            .collect();
        let window = Some((Duration::from_millis(1), Duration::from_millis(3)));
        let html = render(
            &failure(t, Evidence { lines: vec!["op#7".into()], window }),
            &ops,
            &ReportMeta::default(),
        );
        assert!(html.len() < 5_000_000, "{} bytes for 20k events", html.len());
        // Kept for a look in a browser (how fast it draws): the test does not depend on it.
        let _ = std::fs::write(std::env::temp_dir().join("dosim-report-20k.html"), &html);
    }

    #[test]
    fn the_evidence_names_operations_by_their_op_numbers() {
        let evidence = Evidence {
            lines: vec![
                "op#5 client 0 on c: \"add\" [1ms..2ms] -> ok 5".into(),
                "read op#12 saw what op#5 wrote; noop#7 and op# are not ids".into(),
            ],
            window: None,
        };
        assert_eq!(named_ops(&evidence), BTreeSet::from([OpId(5), OpId(12)]));
    }

    #[test]
    fn labels_and_ids_are_found_in_log_lines() {
        assert_eq!(
            label_in("Counter/0123456789ab event 3 delivered (rpc add(1))"),
            Some("Counter/0123456789ab")
        );
        assert_eq!(label_in("Counter/0123456789a event 3 done"), None);
        assert_eq!(label_in("a/b c"), None);
        let full = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(id_prefix_in(&format!("applied ns/{full} epoch=3 version=1")), Some("0123456789ab"));
        assert_eq!(id_prefix_in("applied o epoch=3 version=1"), None);
        assert_eq!(nodes_in("{n0} -> {n1,n12}"), vec![NodeId(0), NodeId(1), NodeId(12)]);
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
