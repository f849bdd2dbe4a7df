//! Unit tests of an object on one simulated host, the way Cloudflare's Vitest pool runs them: the test's body
//! gets the [`Host`] and calls its objects through stubs, looks inside a live instance
//! ([`Host::run_in_object`], `runInDurableObject`), runs an alarm now ([`Host::run_alarm_now`],
//! `runDurableObjectAlarm`), lists a namespace's ids ([`Host::object_ids`], `listDurableObjectIds`), evicts
//! one object or all ([`Host::evict`], [`Host::evict_idle`]), and injects overload and reset errors
//! ([`Host::overload_next`], [`Host::reset`]). Each run is a new world, so storage is fresh per test; time is
//! the simulated clock, so an alarm half an hour away fires after `sleep(30 min)` at once (a run's simulated time is limited to an hour).
//!
//! ```ignore
//! sim_test!(fn the_alarm_resets_the_counter(seed) {
//!     ObjectTest::host(seed).class::<Counter>("COUNTER").run_on_host(async |host| {
//!         let id = host.env().durable_object("COUNTER")?.id_from_name("c");
//!         host.env().durable_object("COUNTER")?.get(&id)?.fetch(Request::get("/reset-in-an-hour")).await?;
//!         assert!(host.run_alarm_now("COUNTER", &id).await?);
//!         Ok(())
//!     })
//! });
//! ```

use std::rc::Rc;

use dosim_runtime::embed::Host;
use dosim_runtime::error::Error;
use dosim_runtime::prelude::Stub;
use dosim_sim::{DiskConfig, Failure, RunFailure, RunOptions, RunReport, Seed, Sim, SimRng};

use super::{Driver, ObjectTest};
use crate::sim_host::host_node;

/// The driver of a test without a workload ([`ObjectTest::host`]): it has no operations.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoWorkload;

impl Driver for NoWorkload {
    type Input = ();
    type Output = ();

    fn next_op(&self, _rng: &mut SimRng) {}

    async fn call(&self, _stub: &Stub, (): ()) -> Result<(), Error> {
        Err(Error::new("a host test has no workload"))
    }
}

impl ObjectTest<NoWorkload> {
    /// A test of objects on one host, run by a body of the test's own ([`ObjectTest::run_on_host`]).
    pub fn host(seed: Seed) -> ObjectTest<NoWorkload> {
        ObjectTest::new(seed)
    }

    /// Runs `body` on the host (a simulated node with its own disk and clock, the test's classes deployed):
    /// the run passes if the body returns `Ok`. A runtime error the body passes on with `?` fails the run
    /// with the error's message; a failed `ensure!` fails it as a check.
    pub fn run_on_host(
        self,
        body: impl AsyncFnOnce(Rc<Host>) -> Result<(), Failure> + Send + 'static,
    ) -> Result<RunReport, RunFailure> {
        if self.classes.is_empty() {
            let mut f = RunFailure::from(dosim_sim::PlanError(
                "a host test needs a class (ObjectTest::class)".into(),
            ));
            f.seed = self.seed;
            return Err(f);
        }
        let build = self.build_fn();
        let (config, node) = host_node(dosim_sim::NodeId(0), "host", move || build());
        let options = RunOptions::new(self.seed).with("topology", "host");
        Sim::builder().seed(self.seed).node(config).disk(DiskConfig::default()).options(options).build()?.run(
            move |_world| async move { node.run_on_host(move |host| async move { body(host).await }).await? },
        )
    }
}
