//! Memory estimates, checked before a model is loaded, against what the process may use: the
//! lower of the system's `MemAvailable` and the room left under the memory cgroup's limit
//! (v2 `memory.max`, v1 `memory.limit_in_bytes`, of the process's cgroup and its parents), or
//! a limit set with `EDGELLM_MEMORY_LIMIT`.

use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable that sets the memory limit instead of the system's figures: bytes,
/// or a number with a `K`, `M`, `G` or `T` suffix (binary units, `KiB`/`MB` spellings
/// accepted), e.g. `EDGELLM_MEMORY_LIMIT=2G`. For tests, and to keep a process under a budget.
pub const MEMORY_LIMIT_ENV: &str = "EDGELLM_MEMORY_LIMIT";

/// Where a memory limit comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// `MemAvailable` of `/proc/meminfo`.
    MemAvailable,
    /// A cgroup v2 `memory.max` (less the cgroup's `memory.current`), with its directory.
    CgroupV2(PathBuf),
    /// A cgroup v1 `memory.limit_in_bytes` (less `memory.usage_in_bytes`), with its directory.
    CgroupV1(PathBuf),
    /// [`MEMORY_LIMIT_ENV`].
    Env,
}

impl fmt::Display for LimitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitSource::MemAvailable => write!(f, "MemAvailable in /proc/meminfo"),
            LimitSource::CgroupV2(d) => write!(f, "the cgroup limit {}", d.join("memory.max").display()),
            LimitSource::CgroupV1(d) => {
                write!(f, "the cgroup limit {}", d.join("memory.limit_in_bytes").display())
            }
            LimitSource::Env => write!(f, "{MEMORY_LIMIT_ENV}"),
        }
    }
}

/// Bytes a new allocation may take, and what says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes available.
    pub bytes: u64,
    /// Where the figure comes from.
    pub source: LimitSource,
}

/// An unparseable [`MEMORY_LIMIT_ENV`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{MEMORY_LIMIT_ENV}={0:?} is not a size: give bytes or a number with K, M, G or T (e.g. 2G)")]
pub struct BadLimit(pub String);

/// Bytes of memory available to a new allocation: the lower of `MemAvailable` and the room
/// left in the memory cgroup; [`MEMORY_LIMIT_ENV`] overrides both. `None` where the system
/// does not say (and the variable is not set).
pub fn available_bytes() -> Option<u64> {
    memory_limit().ok().flatten().map(|l| l.bytes)
}

/// [`available_bytes`] with its source; an error for an unparseable [`MEMORY_LIMIT_ENV`].
pub fn memory_limit() -> Result<Option<MemoryLimit>, BadLimit> {
    if let Some(v) = std::env::var_os(MEMORY_LIMIT_ENV) {
        let v = v.to_string_lossy();
        return parse_size(&v)
            .map(|bytes| Some(MemoryLimit { bytes, source: LimitSource::Env }))
            .ok_or(BadLimit(v.into()));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| parse_meminfo(&t));
    let mem = meminfo.map(|bytes| MemoryLimit { bytes, source: LimitSource::MemAvailable });
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| cgroup_room(&t, Path::new("/sys/fs/cgroup")));
    Ok(match (mem, cgroup) {
        (Some(m), Some(c)) => Some(if c.bytes < m.bytes { c } else { m }),
        (m, c) => m.or(c),
    })
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// A size: bytes, or a number with a binary `K`, `M`, `G`, `T` suffix (`2G`, `512MiB`, `1.5 GB`).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let x: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B').trim_end_matches('I') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    let b = x * mult as f64;
    (b.is_finite() && b >= 0.0 && b < u64::MAX as f64).then_some(b as u64)
}

/// The tightest room left under the memory limits of the cgroup `/proc/self/cgroup` names
/// (`proc_cgroup`, its text) and its parents, under the cgroup mount `root`: v2 (`0::/path`,
/// `memory.max` − `memory.current`) or v1 (`N:memory:/path` or `N:...,memory,...:/path`,
/// `memory/…/memory.limit_in_bytes` − `memory.usage_in_bytes`). `None` when no limit is set.
pub fn cgroup_room(proc_cgroup: &str, root: &Path) -> Option<MemoryLimit> {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().map(|t| t.trim().to_string());
    let mut best: Option<MemoryLimit> = None;
    let mut consider = |limit: u64, used: u64, source: LimitSource| {
        let room = limit.saturating_sub(used);
        if best.as_ref().is_none_or(|b| room < b.bytes) {
            best = Some(MemoryLimit { bytes: room, source });
        }
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (base, v2) = if id == "0" && ctrl.is_empty() {
            (root.to_path_buf(), true)
        } else if ctrl.split(',').any(|c| c == "memory") {
            (root.join("memory"), false)
        } else {
            continue;
        };
        // The process's cgroup, then each parent up to the mount's root.
        let mut rel = PathBuf::from(path.trim_start_matches('/'));
        loop {
            let dir = base.join(&rel);
            if v2 {
                if let Some(max) = read(dir.join("memory.max")).and_then(|t| t.parse::<u64>().ok()) {
                    let used = read(dir.join("memory.current")).and_then(|t| t.parse().ok()).unwrap_or(0);
                    consider(max, used, LimitSource::CgroupV2(dir.clone()));
                }
            } else if let Some(max) =
                read(dir.join("memory.limit_in_bytes")).and_then(|t| t.parse::<u64>().ok())
            {
                // v1 writes "no limit" as a page-rounded i64::MAX.
                if max < 1 << 62 {
                    let used =
                        read(dir.join("memory.usage_in_bytes")).and_then(|t| t.parse().ok()).unwrap_or(0);
                    consider(max, used, LimitSource::CgroupV1(dir.clone()));
                }
            }
            if !rel.pop() {
                break;
            }
        }
    }
    best
}

/// Peak resident memory of this process so far, in bytes (`VmHWM`), where the system says.
pub fn peak_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Format a byte count for people: `"97.6 MiB"`.
pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < U.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{x:.1} {}", U[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("1.5 GB"), Some(3 << 29));
        assert_eq!(parse_size("12k"), Some(12 << 10));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("3X"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn meminfo() {
        let t = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(parse_meminfo(t), Some(22000000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    /// A fake cgroup tree: the tightest room over the cgroup and its parents wins; "max" and
    /// v1's unlimited value are no limit.
    #[test]
    fn cgroup_limits_v2_and_v1() {
        let root = std::env::temp_dir().join(format!("edgellm-cgroup-{}", std::process::id()));
        let w = |rel: &str, file: &str, text: &str| {
            let d = root.join(rel);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(file), text).unwrap();
        };
        // v2: the leaf allows 1 GiB with 256 MiB used; its parent 2 GiB with 1.5 GiB used.
        w("app/leaf", "memory.max", "1073741824\n");
        w("app/leaf", "memory.current", "268435456\n");
        w("app", "memory.max", "2147483648\n");
        w("app", "memory.current", "1610612736\n");
        w("", "memory.max", "max\n");
        let l = cgroup_room("0::/app/leaf\n", &root).unwrap();
        assert_eq!(l.bytes, 512 << 20);
        assert_eq!(l.source, LimitSource::CgroupV2(root.join("app")));
        // No limit anywhere.
        w("free", "memory.max", "max\n");
        assert_eq!(cgroup_room("0::/free\n", &root), None);
        // v1 (hybrid hierarchy), unlimited parent.
        w("memory/job", "memory.limit_in_bytes", "805306368\n");
        w("memory/job", "memory.usage_in_bytes", "268435456\n");
        w("memory", "memory.limit_in_bytes", "9223372036854771712\n");
        let l = cgroup_room("4:memory:/job\n1:cpu:/\n0::/\n", &root).unwrap();
        assert_eq!(l.bytes, 512 << 20);
        assert!(l.source.to_string().ends_with("memory.limit_in_bytes"), "{}", l.source);
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn reads_proc_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(available_bytes().unwrap() > 0);
            assert!(peak_rss_bytes().unwrap() > 0);
        }
    }
}
