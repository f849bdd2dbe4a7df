//! The failure report as HTML (`dosim_scenarios::report_html`): a small run with a planted write-behind bug
//! fails its check, and its page shows the lanes, the messages, the faults and the violation, both in the HTML
//! text and in the DOM headless Chromium builds after the page's script ran (and in a screenshot).
//!
//! Chromium is required, not optional: without it the test fails and says how to install it
//! (`apt-get install -y chromium`; `.ci/run` does). `DOSIM_CHROMIUM` names another binary.

// `is_multiple_of` is newer than the workspace's rust-version (1.85).
#![allow(clippy::manual_is_multiple_of)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dosim_scenarios::history::{ErrorFlags, History, Outcome};
use dosim_scenarios::report_html::{self, OpView, ReportMeta};
use dosim_sim::net::Endpoint;
use dosim_sim::{
    disk, Addr, Direction, DiskConfig, Evidence, Failure, NodeConfig, NodeId, RunFailure, Seed, Sim,
};

const PORT: u16 = 7;
const SERVER: NodeId = NodeId(0);
/// The object label the server's log lines name, as the runtime's do (`Class/hex12`).
const LABEL: &str = "Counter/0123456789ab";
/// Its full id, as storage lines name it.
const FULL_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// Every how many adds the server syncs its counter: the adds between syncs are acknowledged write-behind.
const SYNC_EVERY: u64 = 4;

type Ops = Arc<Mutex<History<String, i64>>>;

/// Simulated time since the start of the run.
fn now() -> Duration {
    madsim::time::TimeHandle::current().elapsed()
}

/// A counter server with a planted write-behind bug: it acknowledges an add before the counter is durable
/// (it syncs every [`SYNC_EVERY`] adds), so a power cut loses acknowledged adds. Every 5th request is refused.
fn server() -> NodeConfig {
    NodeConfig::new("counter").program(|| async {
        let file = disk::open("counter", true).expect("open the counter");
        let mut buf = [0u8; 8];
        let n = disk::read_at(&file, 0, &mut buf).unwrap_or(0);
        let mut value = if n == 8 { i64::from_le_bytes(buf) } else { 0 };
        tracing::debug!(target: "dosim::runtime", "{LABEL} starts");
        tracing::debug!(target: "dosim::storage_node", "opened ns/{FULL_ID} epoch=1");
        let mut ep = Endpoint::bind(PORT).expect("port free at boot");
        let mut event = 0u64;
        loop {
            let d = ep.recv().await;
            event += 1;
            let ask = String::from_utf8_lossy(&d.payload).to_string();
            tracing::debug!(target: "dosim::runtime", "{LABEL} event {event} delivered (rpc {ask})");
            madsim::time::sleep(Duration::from_millis(2)).await;
            let reply = if event % 5 == 0 {
                tracing::debug!(target: "dosim::runtime", "{LABEL} refuses a request: overloaded");
                "err overloaded".to_string()
            } else if ask == "get" {
                format!("ok {value}")
            } else {
                value += 1;
                disk::write_at(&file, 0, &value.to_le_bytes()).expect("write");
                tracing::debug!(target: "dosim::storage", "{LABEL} put count");
                if value as u64 % SYNC_EVERY == 0 {
                    disk::sync(&file).expect("sync");
                    tracing::debug!(target: "dosim::storage", "commit");
                    tracing::debug!(target: "dosim::storage_node", "applied ns/{FULL_ID} epoch=1 version={value}");
                }
                format!("ok {value}")
            };
            ep.send(d.from, reply.into_bytes());
            tracing::debug!(target: "dosim::runtime", "{LABEL} event {event} done");
        }
    })
}

/// Client `c`: `adds` adds, one at a time, then a get; each recorded in `ops`.
async fn client(c: u32, adds: u32, ops: Ops, pause: Duration) {
    let mut ep = Endpoint::bind(PORT + 1).expect("client port");
    let to = Addr { node: SERVER, port: PORT };
    for i in 0..=adds {
        let ask = if i == adds { "get" } else { "add(1)" };
        if i == adds {
            // The last read comes after the faults.
            madsim::time::sleep(pause).await;
        }
        let id = ops.lock().unwrap().invoke(c, "counter", ask.to_string(), now());
        ep.send(to, ask.as_bytes().to_vec());
        let outcome = match madsim::time::timeout(Duration::from_millis(30), ep.recv()).await {
            Ok(d) => {
                let text = String::from_utf8_lossy(&d.payload).to_string();
                match text.strip_prefix("ok ") {
                    Some(v) => Outcome::Ok(v.parse().expect("a number")),
                    None => Outcome::Err {
                        message: text,
                        flags: ErrorFlags { overloaded: true, ..ErrorFlags::default() },
                    },
                }
            }
            Err(_) => Outcome::Unknown,
        };
        ops.lock().unwrap().complete(id, outcome, now());
        madsim::time::sleep(Duration::from_millis(3)).await;
    }
}

/// Runs the planted bug under `seed`: two clients add while the server loses power, is partitioned from
/// client 1 and is restarted; the final reads must see every acknowledged add. Returns the failure (or
/// `None` if the run passed) and the history.
fn failing_run(seed: Seed) -> (Option<RunFailure>, History<String, i64>) {
    let ops: Ops = Arc::default();
    let run_ops = ops.clone();
    let sim = Sim::builder()
        .seed(seed)
        .node(server())
        .node(NodeConfig::new("client-a"))
        .node(NodeConfig::new("client-b"))
        .disk(DiskConfig::instant())
        .build()
        .expect("a valid world");
    let result = sim.run(move |world| async move {
        let ops = run_ops;
        let a = world.spawn_on(NodeId(1), client(0, 12, ops.clone(), Duration::from_millis(120)))?;
        let b = world.spawn_on(NodeId(2), client(1, 10, ops.clone(), Duration::from_millis(140)))?;
        world.sleep(Duration::from_millis(44)).await;
        world.power_cut(SERVER)?;
        world.sleep(Duration::from_millis(25)).await;
        world.restart(SERVER)?;
        world.sleep(Duration::from_millis(10)).await;
        world.partition(&[SERVER], &[NodeId(2)], Direction::Both)?;
        world.sleep(Duration::from_millis(20)).await;
        world.heal();
        world.sleep(Duration::from_millis(10)).await;
        world.crash(NodeId(1))?;
        world.restart(NodeId(1))?;
        let _ = b.await;
        drop(a); // client 0 died with its node's crash
        world.sleep(Duration::from_millis(5)).await;
        let checked = check(&ops.lock().unwrap());
        checked
    });
    let history = ops.lock().unwrap().clone();
    (result.err(), history)
}

/// Every read sees at least as many adds as were acknowledged before it was invoked; the evidence names the
/// read and the adds that acknowledged a value another add had acknowledged (the trace of the lost ones).
fn check(h: &History<String, i64>) -> Result<(), Failure> {
    for read in h.ops().iter().filter(|o| o.input == "get") {
        let Outcome::Ok(seen) = read.outcome else { continue };
        let acked: Vec<_> = h
            .ops()
            .iter()
            .filter(|o| o.input != "get" && o.completed.is_some_and(|c| c < read.invoked))
            .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
            .collect();
        if (acked.len() as i64) > seen {
            // The lost adds show as values acknowledged twice: the adds after the loss counted again from
            // the durable value. The window runs from the first of them to the last.
            let mut by_value: std::collections::BTreeMap<i64, Vec<_>> = std::collections::BTreeMap::new();
            for o in &acked {
                by_value.entry(*o.outcome.value().expect("acknowledged")).or_default().push(*o);
            }
            let twice: Vec<_> = by_value.values().filter(|v| v.len() > 1).flatten().copied().collect();
            let mut lines: Vec<String> = twice.iter().map(|o| o.to_string()).collect();
            lines.push(read.to_string());
            let start = twice.iter().map(|o| o.invoked).min().unwrap_or(read.invoked);
            let end = twice.iter().filter_map(|o| o.completed).max().unwrap_or(read.invoked);
            return Err(Failure::new(format!(
                "a read saw {seen} after {} acknowledged adds: {} adds acknowledged the same value as another",
                acked.len(),
                twice.len()
            ))
            .with_evidence(Evidence { lines, window: Some((start, end)) }));
        }
    }
    Ok(())
}

fn out_dir() -> PathBuf {
    let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join("report_html");
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

/// The Chromium binary: `DOSIM_CHROMIUM`, else the first of the usual names on the path. Fails, with how to
/// install it, if there is none.
fn chromium() -> PathBuf {
    let install = "Install it: `apt-get install -y chromium` (Debian/Ubuntu; .ci/run does this), or set \
                   DOSIM_CHROMIUM to a Chrome or Chromium binary.";
    if let Some(p) = std::env::var_os("DOSIM_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "headless Chromium is needed to test the HTML failure report, and DOSIM_CHROMIUM={} is no file. {install}", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "headless Chromium is needed to test the HTML failure report and none was found (chromium, \
         chromium-browser, google-chrome on PATH or in /usr/bin). {install}"
    )
}

/// Runs headless Chromium on `page` with `args`, in a fresh profile, with a wall-clock limit; returns stdout.
fn headless(page: &Path, args: &[String], profile: &Path) -> String {
    let bin = chromium();
    let url = format!("file://{}", page.display());
    let mut child = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    #[allow(clippy::disallowed_methods)] // drains a real process's pipes, outside any simulation
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    #[allow(clippy::disallowed_methods)]
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for chromium") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} did not finish within 120 s on {url}", bin.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    assert!(status.success(), "{} {args:?} failed ({status}):\n{err}", bin.display());
    out
}

/// How often `needle` occurs in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// The element of `dom` with `data-lane="lane"`: its text up to the next lane's container.
fn lane<'a>(dom: &'a str, lane: &str) -> &'a str {
    let start =
        dom.find(&format!("data-lane=\"{lane}\"")).unwrap_or_else(|| panic!("no lane {lane} in the DOM"));
    let rest = &dom[start..];
    let end = rest[1..].find("data-lane=").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

#[test]
fn a_failing_run_renders_as_a_timeline_that_shows_the_violation() {
    let seed = Seed(0x7e5);
    let (failure, history) = failing_run(seed);
    let failure = failure.unwrap_or_else(|| {
        let ops: Vec<String> = history.ops().iter().map(|o| o.to_string()).collect();
        panic!(
            "the planted write-behind bug must lose acknowledged adds at the power cut:\n{}",
            ops.join("\n")
        )
    });
    assert!(failure.to_string().contains("acknowledged the same value as another"), "{failure}");
    let named = report_html::named_ops(&failure.evidence);
    assert!(named.len() >= 2, "the evidence names the read and the lost adds: {:?}", failure.evidence);
    let ops = OpView::from_history(&history, &named);
    let meta = ReportMeta {
        title: "report_html::planted write-behind".into(),
        replay: Some(format!("cargo simtest -p dosim-scenarios --test it -- report_html (seed {seed})")),
    };
    let html = report_html::render(&failure, &ops, &meta);
    let dir = out_dir();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).expect("write the page");
    eprintln!("report: {} ({} bytes)", page.display(), html.len());

    // (a) The HTML text: header, lanes, the violation box with every evidence line, nothing fetched.
    assert!(html.contains(&seed.to_string()), "the seed is in the header");
    assert!(html.contains(&format!("{:016x}", failure.trace_hash())), "the trace hash is in the header");
    assert!(html.contains("power-cut=1"), "fault counts in the header: {}", failure.faults);
    for l in ["client-0", "client-1", "node-n0", "node-n1", "node-n2", "network", &format!("object-{LABEL}")]
    {
        assert!(html.contains(&format!("data-lane=\"{l}\"")), "lane {l} in the static HTML");
    }
    assert_eq!(count(&html, "id=\"violation\""), 1, "one violation box");
    let violation = &html[html.find("id=\"violation\"").unwrap()..];
    let violation = &violation[..violation.find("</section>").unwrap()];
    for line in &failure.evidence.lines {
        let escaped =
            line.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
        assert!(violation.contains(&escaped), "evidence line {line:?} in the violation box");
    }
    for url in ["http://", "https://", "src=\"//", "href=\"//", "@import", "url("] {
        assert!(!html.contains(url), "the page must fetch nothing, but holds {url:?}");
    }
    assert!(!html.contains("</script>\n<script>") || html.matches("<script").count() == 2, "two scripts");

    // (b) The DOM after the script ran: items drawn in every kind of lane, messages, the window shaded, the
    // named operations outlined, the trace listed.
    let profile = dir.join("profile-dom");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = headless(&page, &["--dump-dom".into(), "--virtual-time-budget=5000".into()], &profile);
    assert!(dom.contains("data-ready=\"1\""), "the script ran to its end:\n{}", &dom[..dom.len().min(2000)]);
    let client0 = lane(&dom, "client-0");
    assert!(count(client0, "class=\"it op ok") >= 3, "client 0's adds drawn as bars:\n{client0}");
    assert!(count(&dom, "class=\"it op unknown") >= 1, "the adds lost in the power cut are unknown");
    assert!(count(&dom, "class=\"it op error") >= 1, "the refused adds are errors");
    let outlined = count(&dom, " violation\" data-item=");
    assert_eq!(outlined, named.len(), "every named operation, and only those, outlined");
    let n0 = lane(&dom, "node-n0");
    for class in ["mark crash powercut", "mark restart", "span down", "mark sync", "mark fault"] {
        assert!(n0.contains(&format!("class=\"it {class}")), "node n0 shows {class}:\n{n0}");
    }
    assert!(lane(&dom, "node-n1").contains("class=\"it mark crash\""), "node n1's crash");
    let object = lane(&dom, &format!("object-{LABEL}"));
    for class in ["span event", "span event cut", "mark restart objstart", "mark applied", "mark opened"] {
        assert!(object.contains(&format!("class=\"it {class}")), "the object lane shows {class}:\n{object}");
    }
    assert!(
        lane(&dom, "network").contains("class=\"it mark fault\""),
        "the partition and heal on the network"
    );
    assert!(count(&dom, "<line class=\"wire\"") > 20, "delivered messages drawn as lines");
    assert!(count(&dom, "<line class=\"wire drop\"") >= 1, "dropped messages drawn");
    assert!(dom.contains("id=\"shade\""), "the evidence window shaded");
    let rows = count(&dom, "class=\"l ");
    assert_eq!(rows as u64, failure.trace.len(), "every trace event in the log panel");
    assert!(dom.contains("class=\"l k-log win\""), "the window's events marked in the log");

    // Interaction: clicking the power cut's marker selects its trace row and scrolls the log to it; the filter
    // hides every row that does not match. A script appended to a copy of the page clicks and reports.
    let probe = r#"<script>
      var cut = document.querySelector('[data-lane="node-n0"] .it.powercut');
      cut.click();
      var sel = document.querySelector('#log .l.sel');
      document.body.setAttribute('data-selected', sel ? sel.textContent : 'none');
      document.body.setAttribute('data-log-scrolled', document.getElementById('log').scrollTop > 0 ? 'yes' : 'no');
      var f = document.getElementById('filter');
      f.value = 'PowerCut';
      f.dispatchEvent(new Event('input'));
      setTimeout(function () {
        var shown = document.querySelectorAll('#log .l:not(.hide)').length;
        document.body.setAttribute('data-filtered', String(shown));
      }, 400);
    </script></body>"#;
    let clicked = dir.join("report-click.html");
    std::fs::write(&clicked, html.replace("</body>", probe)).expect("write the probe page");
    let profile = dir.join("profile-click");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = headless(&clicked, &["--dump-dom".into(), "--virtual-time-budget=5000".into()], &profile);
    let attr = |name: &str| {
        let start = dom.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} on the body"));
        let rest = &dom[start + name.len() + 2..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    assert!(
        attr("data-selected").contains("node PowerCut"),
        "the click selects the power cut's row: {}",
        attr("data-selected")
    );
    assert_eq!(attr("data-log-scrolled"), "yes", "the log scrolled to it");
    let cuts = failure.trace.events().iter().filter(|e| e.to_string().contains("PowerCut")).count();
    assert_eq!(attr("data-filtered"), cuts.to_string(), "the filter shows only the matching rows");

    // A picture, to look at (and for docs/img/report.png).
    let png = dir.join("report.png");
    let _ = std::fs::remove_file(&png);
    let profile = dir.join("profile-shot");
    let _ = std::fs::remove_dir_all(&profile);
    headless(
        &page,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1600,1000".into(),
            "--virtual-time-budget=5000".into(),
        ],
        &profile,
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 20_000, "a screenshot with something drawn: {} is {size} bytes", png.display());
    eprintln!("screenshot: {}", png.display());
}

/// The negative control: without the violation (a run with nothing named), the page has no outlined
/// operation and no shaded window, so the assertions above test the mechanism, not the page's defaults.
#[test]
fn a_page_without_evidence_outlines_nothing() {
    let (failure, history) = failing_run(Seed(0x7e5));
    let mut failure = failure.expect("the planted bug fails the run");
    failure.evidence = Evidence::default();
    let ops = OpView::from_history(&history, &BTreeSet::new());
    let html = report_html::render(&failure, &ops, &ReportMeta::default());
    assert!(html.contains("id=\"violation\""), "the box is there");
    assert!(html.contains("The check named no evidence."));
    assert!(!html.contains("\"window\":["), "no window in the data");
    let data = &html[html.find("id=\"data\"").unwrap()..];
    assert!(!data.contains(" violation\","), "no item of the data carries the violation class");
}

/// On a real failure of the object cluster (its negative control: a storage node without fencing), the
/// runtime's and storage node's log lines give each object a lane of its label, with its events, resets and
/// applied commits, and every node of the cluster a lane.
#[test]
fn a_real_cluster_failure_gets_object_lanes_from_the_runtime_log() {
    let (seed, failure) = (0..16)
        .map(|i| Seed(7).nth(i))
        .find_map(|seed| dosim_scenarios::object_cluster::run_negative_control(seed).err().map(|f| (seed, f)))
        .expect("the negative control is caught in some seed");
    let meta = ReportMeta {
        title: "object-cluster without fencing".into(),
        replay: Some(format!("cargo dosim run object-cluster --seed {seed}")),
    };
    let html = report_html::render(&failure, &[], &meta);
    std::fs::write(out_dir().join("cluster.html"), &html).expect("write the page");
    let lanes: Vec<&str> = html.split("data-lane=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    assert!(lanes.iter().any(|l| l.starts_with("object-Counter/")), "counter lanes: {lanes:?}");
    assert!(lanes.iter().any(|l| l.starts_with("object-Register/")), "register lanes: {lanes:?}");
    assert!(lanes.iter().filter(|l| l.starts_with("node-n")).count() >= 5, "the cluster's nodes: {lanes:?}");
    for class in ["span event", "mark applied", "mark reset", "mark crash"] {
        assert!(html.contains(&format!("\"{class}\",\"")), "some item of class {class} in the data");
    }
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing fetched");
}
