//! Energy of a stretch of work: measured from the CPU's RAPL counters where the machine exposes
//! them (`/sys/class/powercap/intel-rapl:N/energy_uj`, the package domains), otherwise
//! estimated as the process's CPU time × a per-core power figure the user gives — and always
//! labelled with which of the two it is.
//!
//! RAPL counters are cumulative microjoules that wrap at `max_energy_range_uj`; a reading that
//! went down wrapped once (a stretch long enough to wrap twice — minutes at full power on a
//! large package — is beyond what this measures). They count the whole package, other
//! processes included: on a shared machine RAPL overstates one program's energy. CPU time is
//! the sum over this process's threads of the time they ran (`/proc/self/task/*/schedstat`,
//! nanoseconds), so idle threads cost nothing and a busy-waiting one costs its spinning.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Where an energy figure comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnergySource {
    /// Measured by the RAPL package counters (whole packages, other processes included).
    Rapl {
        /// The domains read, e.g. `["package-0"]`.
        domains: Vec<String>,
    },
    /// Estimated: CPU seconds × watts per busy core.
    Estimate {
        /// The per-core power given.
        watts_per_core: f64,
    },
}

impl EnergySource {
    /// A short label for tables: `"RAPL"` or `"estimate (CPU time × 4 W/core)"`.
    pub fn label(&self) -> String {
        match self {
            EnergySource::Rapl { .. } => "RAPL".into(),
            EnergySource::Estimate { watts_per_core } => {
                format!("estimate (CPU time × {watts_per_core} W/core)")
            }
        }
    }
}

/// What a [`EnergyMeter`] measured over its stretch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnergyReading {
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// CPU seconds of this process's threads (None where `/proc` does not say).
    pub cpu_seconds: Option<f64>,
    /// Joules by RAPL, when readable.
    pub rapl_joules: Option<f64>,
    /// The RAPL domains read.
    pub rapl_domains: Vec<String>,
}

/// An energy figure with its source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    /// Joules.
    pub joules: f64,
    /// Measured or estimated.
    pub source: EnergySource,
}

impl EnergyReading {
    /// The energy: RAPL's where measured, else CPU time × `watts_per_core` where given, else
    /// `None` (no figure is better than a made-up one).
    pub fn energy(&self, watts_per_core: Option<f64>) -> Option<Energy> {
        if let Some(j) = self.rapl_joules {
            return Some(Energy {
                joules: j,
                source: EnergySource::Rapl { domains: self.rapl_domains.clone() },
            });
        }
        let (cpu, w) = (self.cpu_seconds?, watts_per_core?);
        Some(Energy { joules: cpu * w, source: EnergySource::Estimate { watts_per_core: w } })
    }
}

/// One RAPL package domain.
#[derive(Clone, Debug)]
struct RaplDomain {
    name: String,
    energy: PathBuf,
    /// The counter's range (it wraps to 0 past it), microjoules.
    max_uj: u64,
}

/// The RAPL package domains under `root` (normally `/sys/class/powercap`): directories named
/// `intel-rapl:N` (not the sub-domains `intel-rapl:N:M`, which the package already counts)
/// whose `energy_uj` is readable.
fn rapl_domains(root: &Path) -> Vec<RaplDomain> {
    let Ok(dir) = std::fs::read_dir(root) else { return vec![] };
    let mut out: Vec<RaplDomain> = dir
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let rest = file.strip_prefix("intel-rapl:")?;
            if rest.contains(':') || rest.parse::<u32>().is_err() {
                return None;
            }
            let p = e.path();
            let energy = p.join("energy_uj");
            read_u64(&energy)?;
            let max_uj = read_u64(&p.join("max_energy_range_uj")).unwrap_or(u64::MAX);
            let name = std::fs::read_to_string(p.join("name")).map(|s| s.trim().to_string()).unwrap_or(file);
            Some(RaplDomain { name, energy, max_uj })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Microjoules between two readings of a counter that wraps past `max_uj`.
pub fn counter_delta(start: u64, end: u64, max_uj: u64) -> u64 {
    if end >= start {
        end - start
    } else {
        // Wrapped once: from start up to the range's end, then from 0.
        max_uj.saturating_sub(start).saturating_add(end).saturating_add(1)
    }
}

/// CPU seconds of this process's threads so far, from `/proc/self/task/*/schedstat` (the first
/// field: nanoseconds on a CPU).
pub fn process_cpu_seconds() -> Option<f64> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    let mut ns: u64 = 0;
    let mut any = false;
    for e in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("schedstat")) else { continue };
        if let Some(v) = text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            ns += v;
            any = true;
        }
    }
    any.then_some(ns as f64 * 1e-9)
}

/// Measures one stretch of work: create it, do the work, [`EnergyMeter::stop`].
///
/// The CPU time is the difference over threads alive at both ends: a thread pool's workers
/// (which persist) are counted; a thread that exits during the stretch is not.
pub struct EnergyMeter {
    t0: Instant,
    cpu0: Option<f64>,
    rapl: Vec<(RaplDomain, u64)>,
}

impl EnergyMeter {
    /// Start measuring, with RAPL from `/sys/class/powercap` where readable.
    pub fn start() -> EnergyMeter {
        EnergyMeter::start_with(Path::new("/sys/class/powercap"))
    }

    /// [`EnergyMeter::start`] reading RAPL under `root` (tests give a fake tree).
    pub fn start_with(root: &Path) -> EnergyMeter {
        let rapl =
            rapl_domains(root).into_iter().filter_map(|d| read_u64(&d.energy).map(|v| (d, v))).collect();
        EnergyMeter { t0: Instant::now(), cpu0: process_cpu_seconds(), rapl }
    }

    /// Whether RAPL is being read.
    pub fn has_rapl(&self) -> bool {
        !self.rapl.is_empty()
    }

    /// The reading since the start.
    pub fn stop(&self) -> EnergyReading {
        let wall_seconds = self.t0.elapsed().as_secs_f64();
        let cpu_seconds = match (self.cpu0, process_cpu_seconds()) {
            (Some(a), Some(b)) => Some((b - a).max(0.0)),
            _ => None,
        };
        let mut uj: Option<u64> = Some(0);
        for (d, start) in &self.rapl {
            uj = match (uj, read_u64(&d.energy)) {
                (Some(acc), Some(end)) => Some(acc.saturating_add(counter_delta(*start, end, d.max_uj))),
                _ => None,
            };
        }
        let rapl_joules = if self.rapl.is_empty() { None } else { uj.map(|u| u as f64 * 1e-6) };
        EnergyReading {
            wall_seconds,
            cpu_seconds,
            rapl_joules,
            rapl_domains: if rapl_joules.is_some() {
                self.rapl.iter().map(|(d, _)| d.name.clone()).collect()
            } else {
                vec![]
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_counters_count_the_distance_through_the_wrap() {
        assert_eq!(counter_delta(100, 350, 1000), 250);
        // 990 → 1000 (10 µJ, then the wrap to 0 is one more) → 5.
        assert_eq!(counter_delta(990, 5, 1000), 16);
        assert_eq!(counter_delta(7, 7, 1000), 0);
    }

    fn fake_domain(root: &Path, dir: &str, name: &str, uj: u64, max: u64) {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(d.join("max_energy_range_uj"), format!("{max}\n")).unwrap();
    }

    #[test]
    fn rapl_packages_are_summed_subdomains_skipped_and_wraps_handled() {
        let root = std::env::temp_dir().join(format!("edgellm-rapl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        fake_domain(&root, "intel-rapl:0", "package-0", 1_000_000, 262_143_328_850);
        fake_domain(&root, "intel-rapl:1", "package-1", 262_143_000_000, 262_143_328_850);
        fake_domain(&root, "intel-rapl:0:0", "core", 5, 100);
        std::fs::create_dir_all(root.join("intel-rapl-mmio:0")).unwrap();
        let m = EnergyMeter::start_with(&root);
        assert!(m.has_rapl());
        // package-0 +2.5 J; package-1 wraps: +328 850 µJ to the end, +1, then 1 500 000 µJ.
        std::fs::write(root.join("intel-rapl:0/energy_uj"), "3500000\n").unwrap();
        std::fs::write(root.join("intel-rapl:1/energy_uj"), "1500000\n").unwrap();
        std::fs::write(root.join("intel-rapl:0:0/energy_uj"), "99\n").unwrap();
        let r = m.stop();
        let want = 2.5 + (328_850.0 + 1.0 + 1_500_000.0) * 1e-6;
        assert!((r.rapl_joules.unwrap() - want).abs() < 1e-9, "{r:?}");
        assert_eq!(r.rapl_domains, vec!["package-0".to_string(), "package-1".into()]);
        let e = r.energy(Some(10.0)).unwrap();
        assert_eq!(e.source.label(), "RAPL");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn without_rapl_the_estimate_is_cpu_time_times_power_and_labelled() {
        let root = std::env::temp_dir().join(format!("edgellm-norapl-{}", std::process::id()));
        let m = EnergyMeter::start_with(&root);
        assert!(!m.has_rapl());
        // Burn some CPU on this thread.
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed().as_millis() < 50 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let r = m.stop();
        let cpu = r.cpu_seconds.expect("Linux has /proc/self/task/*/schedstat");
        assert!(cpu > 0.02 && cpu <= r.wall_seconds + 0.05, "{r:?}");
        assert!(r.energy(None).is_none(), "no RAPL and no power figure: no energy");
        let e = r.energy(Some(4.0)).unwrap();
        assert!((e.joules - 4.0 * cpu).abs() < 1e-12);
        assert_eq!(e.source.label(), "estimate (CPU time × 4 W/core)");
    }
}
