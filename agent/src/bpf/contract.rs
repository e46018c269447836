//! The contract between the agent and the eBPF object it embeds, checked on the host: every
//! map the agent opens (name, type, key and value size of the typed view it takes), every
//! global it sets before loading, every program it attaches by name with the right program
//! type. A mismatch would otherwise show only when a real kernel refuses the load or aya
//! refuses a map at start. Needs the object `cargo xtask build-ebpf` builds (CI builds it
//! before `cargo test`).
use std::mem::size_of;

use aya_obj::{Object, ProgramSection};
use iommu_enforcer_common::{
    names, pins, DeviceInfo, ExeKey, GroupState, WatchedFile, ADDR_LEN, DRIVER_KEY_LEN,
};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use super::features::Features;
use super::loader::globals;
use super::programs::{Attach, PROGRAMS};
use super::EMBEDDED_OBJECT;

// linux/bpf.h enum bpf_map_type.
const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_ARRAY: u32 = 6;
const RINGBUF: u32 = 27;

/// (name, map type, key size, value size) of every map the agent takes a typed view of
/// (enforce/kernel_maps.rs, bpf/loader.rs).
fn expected_maps() -> Vec<(&'static str, u32, usize, usize)> {
    let u32s = size_of::<u32>();
    vec![
        (names::EVENTS, RINGBUF, 0, 0),
        (names::LOST, PERCPU_ARRAY, u32s, size_of::<u64>()),
        (names::TOPOLOGY, HASH, ADDR_LEN, size_of::<DeviceInfo>()),
        (names::SLOTS, HASH, ADDR_LEN, size_of::<DeviceInfo>()),
        (names::USER_DRIVERS, HASH, DRIVER_KEY_LEN, u32s),
        (names::GROUP_RDEV, HASH, u32s, u32s),
        (names::RESERVED, HASH, u32s, u32s),
        (names::VFIO_DENY, HASH, u32s, size_of::<WatchedFile>()),
        (
            names::TRUSTED_EXE,
            HASH,
            size_of::<ExeKey>(),
            size_of::<u8>(),
        ),
        (names::CONFIG, ARRAY, u32s, u32s),
        (names::GROUPS, ARRAY, u32s, size_of::<GroupState>()),
        (names::RDEV_OPENS, HASH, u32s, size_of::<i32>()),
        (names::PROTECTED_REFS, ARRAY, u32s, size_of::<i32>()),
        (names::COUNTED_FILES, HASH, size_of::<u64>(), u32s),
        (names::NODE_GROUP, HASH, u32s, u32s),
        (names::HOST_PROBES, ARRAY, u32s, size_of::<i32>()),
        (
            names::TRUSTED_CGROUP,
            HASH,
            size_of::<u64>(),
            size_of::<u8>(),
        ),
        (names::SEEDED_OPENS, HASH, u32s, size_of::<i32>()),
    ]
}

fn object_bytes() -> &'static [u8] {
    assert!(
        !EMBEDDED_OBJECT.is_empty(),
        "the eBPF object is missing from target/ebpf/iommu-enforcer.bpf.o: run `cargo xtask \
         build-ebpf` first (then this test rebuilds the agent with it embedded)"
    );
    EMBEDDED_OBJECT
}

#[test]
fn every_map_the_agent_opens_is_in_the_object_with_its_layout() {
    let obj = Object::parse(object_bytes()).expect("the embedded eBPF object parses");
    let mut wrong = Vec::new();
    for (name, kind, key, value) in expected_maps() {
        match obj.maps.get(name) {
            None => wrong.push(format!("map {name} is missing")),
            Some(m) => {
                let have = (m.map_type(), m.key_size() as usize, m.value_size() as usize);
                if have != (kind, key, value) {
                    wrong.push(format!(
                        "map {name}: type/key/value {have:?} in the object, the agent expects {:?}",
                        (kind, key, value)
                    ));
                }
            }
        }
    }
    for name in pins::MAPS {
        if !obj.maps.contains_key(*name) {
            wrong.push(format!("pinned map {name} is missing"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_program_the_loader_attaches_is_in_the_object_with_its_type() {
    let obj = Object::parse(object_bytes()).expect("the embedded eBPF object parses");
    let mut wrong = Vec::new();
    for spec in PROGRAMS {
        let Some(p) = obj.programs.get(spec.program) else {
            wrong.push(format!("program {} is missing", spec.program));
            continue;
        };
        let fits = match spec.attach {
            Attach::FEntry => matches!(p.section, ProgramSection::FEntry { .. }),
            Attach::FExit => matches!(p.section, ProgramSection::FExit { .. }),
            Attach::TracePoint => matches!(p.section, ProgramSection::BtfTracePoint),
            Attach::KProbe => matches!(p.section, ProgramSection::KProbe),
            Attach::KRetProbe => matches!(p.section, ProgramSection::KRetProbe),
            Attach::Lsm => matches!(p.section, ProgramSection::Lsm { sleepable: false }),
        };
        if !fits {
            wrong.push(format!(
                "program {} is {:?} in the object, the loader attaches it as {:?}",
                spec.program, p.section, spec.attach
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_global_the_agent_sets_is_a_u32_in_the_object() {
    let file = object::File::parse(object_bytes()).expect("the embedded eBPF object is ELF");
    // Values do not matter here, only the names: a kernel with nothing readable will do.
    let features = Features::probe(
        std::path::Path::new("/nonexistent"),
        std::path::Path::new("/nonexistent"),
        super::programs::kprobe_targets(),
    );
    let mut wrong = Vec::new();
    for (name, _) in globals(&features) {
        let symbol = file.symbols().find(|s| s.name() == Ok(name));
        let section = symbol
            .as_ref()
            .and_then(|s| s.section_index())
            .and_then(|i| file.section_by_index(i).ok())
            .and_then(|s| s.name().ok().map(str::to_owned));
        match (symbol, section) {
            (Some(s), Some(sec))
                if [".rodata", ".data", ".bss"]
                    .iter()
                    .any(|p| sec.starts_with(p)) =>
            {
                if s.size() != size_of::<u32>() as u64 {
                    wrong.push(format!(
                        "global {name} is {} bytes, the agent sets 4",
                        s.size()
                    ));
                }
            }
            (Some(_), sec) => wrong.push(format!("global {name} is in section {sec:?}, not data")),
            (None, _) => wrong.push(format!("global {name} is missing")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
