//! `SimDisk`'s crash semantics against a model, over random operation sequences (proptest).
//!
//! The model keeps the file's synced image and the writes since. After a power cut, every byte must be either
//! its synced value or the value some pending write put there (or a zero from an extension), synced bytes that
//! no pending operation touched must be intact, and with nothing pending the file must equal its synced image.
//! A process crash must change nothing.

use dosim_sim::disk::{self, CrashMode};
use dosim_sim::{DiskConfig, LocalWorld, Seed};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u16, len: u16, byte: u8 },
    Truncate { size: u16 },
    Sync,
    PowerCut,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..3000, 1u16..1500, any::<u8>()).prop_map(|(offset, len, byte)| Op::Write { offset, len, byte }),
        1 => (0u16..4000).prop_map(|size| Op::Truncate { size }),
        3 => Just(Op::Sync),
        2 => Just(Op::PowerCut),
        1 => Just(Op::Crash),
    ]
}

#[derive(Clone, Debug)]
enum Pending {
    Write { offset: usize, data: Vec<u8> },
    Truncate { size: usize },
}

fn apply(image: &mut Vec<u8>, p: &Pending) {
    match p {
        Pending::Write { offset, data } => {
            if image.len() < offset + data.len() {
                image.resize(offset + data.len(), 0);
            }
            image[*offset..offset + data.len()].copy_from_slice(data);
        }
        Pending::Truncate { size } => image.resize(*size, 0),
    }
}

/// Checks a post-crash image against the synced image and the pending operations.
fn check_after_power_cut(after: &[u8], synced: &[u8], pending: &[Pending]) -> Result<(), String> {
    if pending.is_empty() {
        return if after == synced { Ok(()) } else { Err("nothing pending, yet the file changed".into()) };
    }
    let max_len = pending
        .iter()
        .map(|p| match p {
            Pending::Write { offset, data } => offset + data.len(),
            Pending::Truncate { size } => *size,
        })
        .chain([synced.len()])
        .max()
        .unwrap();
    if after.len() > max_len {
        return Err(format!("file grew to {} beyond anything written ({max_len})", after.len()));
    }
    let min_truncate = pending.iter().filter_map(|p| match p {
        Pending::Truncate { size } => Some(*size),
        _ => None,
    });
    let shrink_floor = min_truncate.min().unwrap_or(usize::MAX);
    for (i, b) in after.iter().enumerate() {
        let from_sync = synced.get(i) == Some(b);
        let zero_fill = *b == 0 && (i >= synced.len() || i >= shrink_floor);
        let from_write = pending.iter().any(|p| match p {
            Pending::Write { offset, data } => {
                i >= *offset && i < offset + data.len() && data[i - offset] == *b
            }
            Pending::Truncate { .. } => false,
        });
        if !(from_sync || zero_fill || from_write) {
            return Err(format!("byte {i} = {b} is neither synced, written, nor an extension"));
        }
    }
    // Synced bytes no pending operation could touch survive.
    for (i, b) in synced.iter().enumerate() {
        let touched = i >= shrink_floor
            || pending.iter().any(
                |p| matches!(p, Pending::Write { offset, data } if i >= *offset && i < offset + data.len()),
            );
        if !touched && after.get(i) != Some(b) {
            return Err(format!("synced byte {i} was lost without any pending operation on it"));
        }
    }
    Ok(())
}

fn run(seed: u64, modes: Vec<CrashMode>, ops: &[Op]) -> Result<(), String> {
    let world =
        LocalWorld::new(Seed(seed), DiskConfig { crash_modes: modes, ..DiskConfig::instant() }).unwrap();
    let mut f = disk::open("f", true).unwrap();
    let mut synced: Vec<u8> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let read_all = |f: &disk::FileHandle| {
        let len = disk::file_size(f).unwrap() as usize;
        let mut buf = vec![0u8; len];
        let n = disk::read_at(f, 0, &mut buf).unwrap();
        assert_eq!(n, len);
        buf
    };
    for op in ops {
        match op {
            Op::Write { offset, len, byte } => {
                let data = vec![*byte; *len as usize];
                disk::write_at(&f, u64::from(*offset), &data).unwrap();
                let p = Pending::Write { offset: *offset as usize, data };
                apply(&mut current, &p);
                pending.push(p);
            }
            Op::Truncate { size } => {
                disk::truncate(&f, u64::from(*size)).unwrap();
                let p = Pending::Truncate { size: *size as usize };
                apply(&mut current, &p);
                pending.push(p);
            }
            Op::Sync => {
                disk::sync(&f).unwrap();
                synced = current.clone();
                pending.clear();
                if disk::durable_image(world.node(), "f").unwrap() != synced {
                    return Err("after sync the durable image is not the current one".into());
                }
            }
            Op::PowerCut => {
                world.power_cut();
                world.restart();
                f = disk::open("f", false).unwrap();
                let after = read_all(&f);
                check_after_power_cut(&after, &synced, &pending)?;
                synced = after.clone();
                current = after;
                pending.clear();
            }
            Op::Crash => {
                world.crash();
                world.restart();
                f = disk::open("f", false).unwrap();
                if read_all(&f) != current {
                    return Err("a process crash changed the file".into());
                }
            }
        }
        if read_all(&f) != current {
            return Err(format!("reads disagree with the model after {op:?}"));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn crash_semantics_hold_for_every_crash_mode(
        seed in any::<u64>(),
        mode in prop::sample::select(CrashMode::ALL.to_vec()),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        prop_assert_eq!(run(seed, vec![mode], &ops), Ok(()));
    }

    #[test]
    fn crash_semantics_hold_with_mixed_modes(
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        prop_assert_eq!(run(seed, CrashMode::ALL.to_vec(), &ops), Ok(()));
    }
}

#[test]
fn the_model_check_rejects_a_lost_synced_byte() {
    // The checker itself must be able to fail: a synced byte that vanished without a pending write on it.
    let synced = vec![1u8, 2, 3];
    let pending = vec![Pending::Write { offset: 0, data: vec![9] }];
    assert!(check_after_power_cut(&[9, 2, 0], &synced, &pending).is_err());
    assert!(check_after_power_cut(&[9, 2, 3], &synced, &pending).is_ok());
    assert!(check_after_power_cut(&[1, 2, 3], &synced, &pending).is_ok());
    assert!(check_after_power_cut(&[1, 7, 3], &synced, &pending).is_err());
}
