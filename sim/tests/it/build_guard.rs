//! Fails loudly when a build meant for simulation lacks `cfg(madsim)`.
//!
//! `.cargo/sim.toml` sets both `--cfg madsim` and the `DOSIM_EXPECT_MADSIM` variable. An environment
//! `RUSTFLAGS` overrides the first but not the second; without this test such a build would compile every
//! simulation test away and report "running 0 tests … ok".

#[test]
fn simulation_build_has_cfg_madsim() {
    if option_env!("DOSIM_EXPECT_MADSIM").is_some() && !cfg!(madsim) {
        panic!(
            "this is the simulation build (.cargo/sim.toml) but cfg(madsim) is off: an environment RUSTFLAGS \
             overrode build.rustflags; unset it or add --cfg madsim to it"
        );
    }
}
