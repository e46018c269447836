//! How long `Policy::load` takes for a policy of 16,000 reservations (one `[[reserve]]` per
//! device, four lines each, about 0.9 MB: what a ConfigMap, at most 1 MiB, holds).
//! `cargo bench -p iommu-enforcer --bench policy_load` (release build); `-- N` for another
//! count. The figure is in the README's policy reference.
use std::path::Path;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(16_000);
    let mut text = String::with_capacity(n * 64);
    for i in 0..n {
        let (domain, bus, dev, func) = (i / 65536, i / 256 % 256, i / 8 % 32, i % 8);
        text.push_str(&format!(
            "[[reserve]]\ndevice = \"{domain:04x}:{bus:02x}:{dev:02x}.{func}\"\ndriver = \"vfio-pci\"\n\n"
        ));
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, &text)?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let policy = iommu_enforcer::policy::Policy::load(Path::new(&path))?;
        let took = start.elapsed().as_secs_f64();
        anyhow::ensure!(policy.reserve.len() == n, "parsed {}", policy.reserve.len());
        best = best.min(took);
    }
    // The TOML parser alone, into an untyped table: the floor under Policy::load.
    let mut toml_best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let value: toml::Table = toml::from_str(&text)?;
        toml_best = toml_best.min(start.elapsed().as_secs_f64());
        drop(value);
    }
    println!(
        "policy_load: {n} reservations ({} bytes): Policy::load {best:.3} s, toml::from_str alone {toml_best:.3} s (best of 3)",
        text.len()
    );
    Ok(())
}
