//! A campaign's report: counts per scenario, the failures, and the files a campaign writes (`report.json`,
//! `regressions.txt`, `failures/<scenario>-<seed>.txt`). Reports of the shards of one campaign merge into the
//! report of the whole.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::SeedRecord;
use super::{exit_code, failure_class, Shard, EXIT_PASS};
use crate::regressions::{self, Regression};
use dosim_sim::Seed;

/// The counts of one scenario in a campaign.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioStats {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that passed.
    pub passed: u64,
    /// Seeds that failed, by class (`invariant`, `liveness`, `panic`, `nondeterminism`).
    pub failed: BTreeMap<String, u64>,
    /// Seeds that ran twice for the determinism check.
    pub determinism_checked: u64,
    /// Seeds per hour of one core: seeds over the summed wall time of their runs.
    pub seeds_per_hour_per_core: f64,
    /// The median of the seeds' wall times in ms (the lower median for an even count), to two significant
    /// digits (from `wall_us_histogram`).
    pub median_wall_ms: f64,
    /// The longest seed's wall time in ms.
    pub max_wall_ms: f64,
    /// "Sometimes" marks reached, with how often, over all seeds.
    pub sometimes: BTreeMap<String, u64>,
    /// Faults injected, by kind, over all seeds.
    pub faults: BTreeMap<String, u64>,
    /// The summed wall time of the seeds' runs in microseconds: the core time they took.
    pub wall_us_total: u64,
    /// The longest seed's wall time in microseconds.
    pub wall_us_max: u64,
    /// How many seeds took each wall time, in microseconds rounded down to two significant digits (1234 µs
    /// counts as 1200): what the median, of one report or of merged shards, is taken from.
    pub wall_us_histogram: BTreeMap<u64, u64>,
}

impl ScenarioStats {
    /// Failed seeds, all classes.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    fn add(&mut self, r: &SeedRecord) {
        self.seeds += 1;
        match &r.class {
            None => self.passed += 1,
            Some(c) => *self.failed.entry(c.clone()).or_default() += 1,
        }
        self.determinism_checked += u64::from(r.determinism_checked);
        for (k, v) in &r.sometimes {
            *self.sometimes.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.faults {
            *self.faults.entry(k.clone()).or_default() += v;
        }
        self.wall_us_total += r.wall_us;
        self.wall_us_max = self.wall_us_max.max(r.wall_us);
        *self.wall_us_histogram.entry(two_digits(r.wall_us)).or_default() += 1;
    }

    fn merge(&mut self, o: &ScenarioStats) {
        self.seeds += o.seeds;
        self.passed += o.passed;
        self.determinism_checked += o.determinism_checked;
        for (map, other) in [
            (&mut self.failed, &o.failed),
            (&mut self.sometimes, &o.sometimes),
            (&mut self.faults, &o.faults),
        ] {
            for (k, v) in other {
                *map.entry(k.clone()).or_default() += v;
            }
        }
        self.wall_us_total += o.wall_us_total;
        self.wall_us_max = self.wall_us_max.max(o.wall_us_max);
        for (k, v) in &o.wall_us_histogram {
            *self.wall_us_histogram.entry(*k).or_default() += v;
        }
    }

    /// Recomputes the derived figures (median, max, rate) from the wall times.
    fn finish(&mut self) {
        let ms = |us: u64| us as f64 / 1000.0;
        self.max_wall_ms = ms(self.wall_us_max);
        // The lower median: the seed at position (n - 1) / 2 in wall-time order.
        let n: u64 = self.wall_us_histogram.values().sum();
        let mut below = 0u64;
        self.median_wall_ms = 0.0;
        for (us, count) in &self.wall_us_histogram {
            below += count;
            if below > n.saturating_sub(1) / 2 {
                self.median_wall_ms = ms(*us);
                break;
            }
        }
        let total = self.wall_us_total;
        // Count at least 1 µs of core time, so a rate is always defined.
        let hours = total.max(1) as f64 / 3_600_000_000.0;
        self.seeds_per_hour_per_core =
            if self.seeds == 0 { 0.0 } else { (self.seeds as f64 / hours).round() };
    }
}

/// `us` rounded down to two significant digits: the bucket of the wall-time histogram.
fn two_digits(us: u64) -> u64 {
    let mut scale = 1;
    while us / scale >= 100 {
        scale *= 10;
    }
    us / scale * scale
}

/// One failed seed of a campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureEntry {
    /// The seed's index in the campaign (the seed is `seed_base.nth(index)`).
    pub index: u64,
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: String,
    /// The class: `invariant`, `liveness`, `panic` or `nondeterminism`.
    pub class: String,
    /// The one-line description.
    pub failure: String,
    /// The command that replays it.
    pub replay: String,
    /// The options the scenario derived from the seed.
    pub options: BTreeMap<String, String>,
}

/// The report of a campaign, or of several shards of one merged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignReport {
    /// The campaign's first seed: seed `i` is `seed_base.nth(i)`.
    pub seed_base: String,
    /// The shards this report covers (`I/N`), sorted; `0/1` is the whole campaign.
    pub shards: Vec<String>,
    /// The scenarios in the order they ran.
    pub scenario_order: Vec<String>,
    /// True if the campaign ran the scenarios' negative controls (the mechanism each checks removed): its
    /// failures are expected, and pass when replayed as regressions of the scenario itself.
    #[serde(default)]
    pub negative_control: bool,
    /// The share of seeds that ran twice for the determinism check (`num/den`).
    pub determinism_share: String,
    /// Wall seconds the campaign took (the longest shard's, for a merged report).
    pub elapsed_s: f64,
    /// The counts per scenario.
    pub scenarios: BTreeMap<String, ScenarioStats>,
    /// Every failed seed, in the order the seeds ran (by index, then scenario order).
    pub failures: Vec<FailureEntry>,
}

impl CampaignReport {
    /// An empty report of a campaign of `scenarios` from `seed_base`.
    pub fn new(
        seed_base: Seed,
        shard: Shard,
        scenarios: &[&str],
        determinism_share: String,
    ) -> CampaignReport {
        CampaignReport {
            seed_base: seed_base.to_string(),
            shards: vec![shard.to_string()],
            scenario_order: scenarios.iter().map(|s| s.to_string()).collect(),
            negative_control: false,
            determinism_share,
            elapsed_s: 0.0,
            scenarios: scenarios.iter().map(|s| (s.to_string(), ScenarioStats::default())).collect(),
            failures: Vec::new(),
        }
    }

    /// Counts seed `index`'s record.
    pub fn add(&mut self, index: u64, r: &SeedRecord) {
        self.scenarios.entry(r.scenario.clone()).or_default().add(r);
        if let Some(class) = &r.class {
            self.failures.push(FailureEntry {
                index,
                scenario: r.scenario.clone(),
                seed: r.seed.clone(),
                class: class.clone(),
                failure: r.failure.clone().unwrap_or_default(),
                replay: r.replay.clone().unwrap_or_default(),
                options: r.options.clone(),
            });
        }
    }

    /// Recomputes the derived figures and puts the failures in run order; call before reading or writing.
    pub fn finish(&mut self) {
        for s in self.scenarios.values_mut() {
            s.finish();
        }
        let order = self.scenario_order.clone();
        let pos = |name: &str| order.iter().position(|s| s == name).unwrap_or(usize::MAX);
        self.failures.sort_by_key(|a| (a.index, pos(&a.scenario)));
    }

    /// Merges the reports of a campaign's shards: the same seed base and scenarios, distinct shards of the
    /// same count. The counts add up; the median is that of all the seeds.
    pub fn merge(reports: &[CampaignReport]) -> Result<CampaignReport, String> {
        let Some(first) = reports.first() else { return Err("no reports to merge".to_string()) };
        let mut out = CampaignReport {
            shards: Vec::new(),
            scenarios: BTreeMap::new(),
            failures: Vec::new(),
            ..first.clone()
        };
        let mut shards: Vec<Shard> = Vec::new();
        for r in reports {
            if r.seed_base != first.seed_base {
                return Err(format!(
                    "the shards ran different campaigns: seed base {} and {} (give every shard the same \
                     --seed-base)",
                    first.seed_base, r.seed_base
                ));
            }
            if r.negative_control != first.negative_control {
                return Err(
                    "a negative-control campaign cannot merge with a campaign of the scenarios".into()
                );
            }
            for s in &r.shards {
                let shard: Shard = s.parse()?;
                if let Some(other) = shards.iter().find(|o| o.count != shard.count) {
                    return Err(format!("shards of different counts: {other} and {shard}"));
                }
                if shards.contains(&shard) {
                    return Err(format!("shard {shard} appears twice"));
                }
                shards.push(shard);
            }
            for name in &r.scenario_order {
                if !out.scenario_order.contains(name) {
                    out.scenario_order.push(name.clone());
                }
            }
            for (name, stats) in &r.scenarios {
                out.scenarios.entry(name.clone()).or_default().merge(stats);
            }
            out.failures.extend(r.failures.iter().cloned());
            out.elapsed_s = out.elapsed_s.max(r.elapsed_s);
        }
        shards.sort_by_key(|s| s.index);
        out.shards = shards.iter().map(Shard::to_string).collect();
        out.finish();
        Ok(out)
    }

    /// The shards of the campaign no report covers (a shard's job that failed to upload, say).
    pub fn missing_shards(&self) -> Vec<String> {
        let shards: Vec<Shard> = self.shards.iter().filter_map(|s| s.parse().ok()).collect();
        let Some(count) = shards.first().map(|s| s.count) else { return Vec::new() };
        (0..count)
            .filter(|i| !shards.iter().any(|s| s.index == *i))
            .map(|index| Shard { index, count }.to_string())
            .collect()
    }

    /// The exit code, as `dosim run`'s: that of the first failure in run order, or 0.
    pub fn exit_code(&self) -> u8 {
        self.failures.iter().find_map(|f| failure_class(&f.class)).map_or(EXIT_PASS, exit_code)
    }

    /// The failing seeds as regressions, each noted with its class and failure.
    pub fn regressions(&self) -> Vec<Regression> {
        self.failures
            .iter()
            .filter_map(|f| {
                let seed = f.seed.parse().ok()?;
                Some(Regression {
                    scenario: f.scenario.clone(),
                    seed,
                    keep: None,
                    note: Some(if self.negative_control {
                        format!("negative control, {}: {}", f.class, f.failure)
                    } else {
                        format!("{}: {}", f.class, f.failure)
                    }),
                })
            })
            .collect()
    }

    /// The table printed at the end: per scenario, seeds, failures, seeds per hour per core, median wall ms.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<20} {:>8} {:>9} {:>16} {:>15}",
            "scenario", "seeds", "failures", "seeds/hour/core", "median wall ms"
        );
        for name in &self.scenario_order {
            let Some(st) = self.scenarios.get(name) else { continue };
            let _ = writeln!(
                s,
                "{:<20} {:>8} {:>9} {:>16} {:>15.1}",
                name,
                st.seeds,
                st.failures(),
                st.seeds_per_hour_per_core,
                st.median_wall_ms
            );
        }
        s
    }

    /// Writes `report.json` and `regressions.txt` to `dir` (creating it).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).expect("a report serializes");
        std::fs::write(dir.join("report.json"), json + "\n")?;
        std::fs::write(dir.join("regressions.txt"), regressions::render(&self.regressions()))?;
        Ok(())
    }

    /// Reads the `report.json` in `dir`.
    pub fn read(dir: &Path) -> Result<CampaignReport, String> {
        let path = dir.join("report.json");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The file a failure's full report goes to, under the campaign's directory: `failures/<scenario>-<seed>.txt`.
pub fn failure_file(dir: &Path, scenario: &str, seed: &str) -> std::path::PathBuf {
    dir.join("failures").join(format!("{scenario}-{seed}.txt"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_bucket_to_two_digits_and_the_median_is_the_lower_one() {
        assert_eq!([0, 7, 99, 100, 1234, 98_765].map(two_digits), [0, 7, 99, 100, 1200, 98_000]);
        let mut s = ScenarioStats::default();
        for us in [5000, 1000, 3000, 2000] {
            s.wall_us_total += us;
            s.wall_us_max = s.wall_us_max.max(us);
            *s.wall_us_histogram.entry(two_digits(us)).or_default() += 1;
            s.seeds += 1;
        }
        s.finish();
        assert_eq!(s.median_wall_ms, 2.0);
        assert_eq!(s.max_wall_ms, 5.0);
        assert_eq!(s.seeds_per_hour_per_core, (4.0 * 3_600_000_000.0 / 11_000.0_f64).round());
    }
}
