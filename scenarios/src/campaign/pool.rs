//! Running seeds in parallel: one simulation runs per process at a time (the run lock in `dosim-sim`: SQLite's
//! PRNG and std's hash keys are process-global), so `--jobs J` runs J worker processes of the same binary.
//!
//! The parent writes one task per line to a worker's stdin (`<scenario> <seed> <check-determinism 0|1>
//! <negative-control 0|1>`) and reads one JSON [`SeedRecord`] line back per task; a worker whose stdin closes
//! exits. Each worker runs one task at a time and gets the next when it answers, so the fast ones take more.
//! The results reach the caller in task order whatever order they finish in, so the output of `--jobs J` is
//! that of a serial run (wall times aside).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use dosim_sim::Seed;

use super::record::SeedRecord;
use super::run_seed;
use crate::{select, Scenario};

/// One seed of one scenario to run.
#[derive(Clone, Copy, Debug)]
pub struct Task {
    /// The seed's index in its campaign (the seed is the base seed's `nth(index)`). Not sent to workers.
    pub index: u64,
    /// The scenario (its negative control already swapped in, if `negative_control`).
    pub scenario: Scenario,
    /// The seed.
    pub seed: Seed,
    /// Run it twice and compare the traces.
    pub check_determinism: bool,
    /// The run is the scenario's negative control.
    pub negative_control: bool,
}

impl Task {
    /// Runs the task in this process.
    pub fn run(&self) -> SeedRecord {
        let r = run_seed(&self.scenario, self.seed, self.check_determinism);
        SeedRecord::new(&r, self.negative_control, self.check_determinism)
    }

    /// The task as a line of the worker protocol (without the line break).
    pub fn to_line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.scenario.name,
            self.seed,
            u8::from(self.check_determinism),
            u8::from(self.negative_control)
        )
    }

    /// Parses a line of the worker protocol.
    pub fn parse_line(line: &str) -> Result<Task, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, seed, check, control] = words[..] else {
            return Err(format!(
                "bad task line {line:?}: expected <scenario> <seed> <check-determinism 0|1> <negative-control 0|1>"
            ));
        };
        let flag = |w: &str| match w {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("bad task line {line:?}: {w:?} is not 0 or 1")),
        };
        let mut scenario = match select(name) {
            Ok(s) if s.len() == 1 => s[0],
            Ok(_) => return Err(format!("bad task line {line:?}: one scenario per task")),
            Err(e) => return Err(e.to_string()),
        };
        let seed: Seed = seed.parse().map_err(|e| format!("{e}"))?;
        let negative_control = flag(control)?;
        if negative_control {
            scenario = scenario
                .negative_control()
                .ok_or_else(|| format!("{} has no negative control", scenario.name))?;
        }
        Ok(Task { index: 0, scenario, seed, check_determinism: flag(check)?, negative_control })
    }
}

/// A worker's loop: reads task lines from `input` until it ends, runs each, and writes its record as one JSON
/// line (with the full report of a failure) to `output`, flushed.
pub fn worker(input: impl BufRead, mut output: impl Write) -> io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let task = Task::parse_line(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let record = task.run();
        writeln!(output, "{}", serde_json::to_string(&record).expect("a record serializes"))?;
        output.flush()?;
    }
    Ok(())
}

/// Runs `tasks` and hands each result to `done`, in task order.
///
/// With `jobs <= 1` they run one after another in this process. Otherwise up to `jobs` worker processes run
/// them, each started by `worker_command` (the same binary's hidden `worker` subcommand); a worker that dies
/// under a task (an abort, a signal) yields a crash record for that task and is replaced. Before taking each
/// next task the pool asks `stop`: once it says true no new task starts, and the ones in flight finish.
pub fn execute(
    mut tasks: impl Iterator<Item = Task>,
    jobs: usize,
    worker_command: &dyn Fn() -> Command,
    mut stop: impl FnMut() -> bool,
    mut done: impl FnMut(&Task, SeedRecord),
) -> io::Result<()> {
    let mut next = || if stop() { None } else { tasks.next() };
    if jobs <= 1 {
        while let Some(task) = next() {
            let record = task.run();
            done(&task, record);
        }
        return Ok(());
    }

    enum Msg {
        Line(String),
        Eof,
    }
    struct Worker {
        child: Child,
        stdin: Option<ChildStdin>,
        task: Option<(u64, Task)>,
    }

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Msg)>();
        let spawn = |id: usize| -> io::Result<Worker> {
            let mut child = worker_command()
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take();
            let tx = tx.clone();
            scope.spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((id, Msg::Line(line))).is_err() {
                        return;
                    }
                }
                let _ = tx.send((id, Msg::Eof));
            });
            Ok(Worker { child, stdin, task: None })
        };
        // Gives a worker its next task, or closes its stdin (so it exits) when there is none.
        let mut issued = 0u64;
        let mut assign = |w: &mut Worker, task: Option<Task>| {
            match task {
                Some(t) => {
                    w.task = Some((issued, t));
                    issued += 1;
                    let sent =
                        w.stdin.as_mut().map(|s| writeln!(s, "{}", t.to_line()).and_then(|()| s.flush()));
                    // A worker that cannot take the line has died: its end of stream reports the task.
                    if !matches!(sent, Some(Ok(()))) {
                        w.stdin = None;
                    }
                }
                None => w.stdin = None,
            }
        };

        let mut workers: Vec<Worker> = Vec::new();
        while workers.len() < jobs {
            let Some(task) = next() else { break };
            let mut w = spawn(workers.len())?;
            assign(&mut w, Some(task));
            workers.push(w);
        }
        let mut live = workers.len();
        let mut finished: BTreeMap<u64, (Task, SeedRecord)> = BTreeMap::new();
        let mut emitted = 0u64;
        while live > 0 {
            let (id, msg) = rx.recv().expect("a reader thread is live");
            match msg {
                Msg::Line(line) => {
                    let record: SeedRecord = match serde_json::from_str(&line) {
                        Ok(r) => r,
                        Err(_) => {
                            // Not a record: something in the run printed to stdout. Pass it on.
                            eprintln!("{line}");
                            continue;
                        }
                    };
                    let w = &mut workers[id];
                    let (index, task) = w.task.take().expect("a record answers a task");
                    finished.insert(index, (task, record));
                    let t = next();
                    assign(w, t);
                }
                Msg::Eof => {
                    let w = &mut workers[id];
                    w.stdin = None;
                    let status = w.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
                    live -= 1;
                    if let Some((index, task)) = w.task.take() {
                        let record = SeedRecord::worker_died(
                            &task.scenario,
                            task.seed,
                            task.negative_control,
                            &status,
                        );
                        finished.insert(index, (task, record));
                        if let Some(t) = next() {
                            let mut fresh = spawn(id)?;
                            assign(&mut fresh, Some(t));
                            workers[id] = fresh;
                            live += 1;
                        }
                    }
                }
            }
            while let Some((task, record)) = finished.remove(&emitted) {
                done(&task, record);
                emitted += 1;
            }
        }
        Ok(())
    })
}
