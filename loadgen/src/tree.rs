//! CPU time and memory of a process together with its descendants (Linux,
//! from `/proc`).
//!
//! websockify forks a process for every connection, so what it costs is
//! spread over a tree of processes; for a server that does not fork the tree
//! is the process alone and these figures are its own.

use std::collections::HashMap;

use anyhow::Context;

/// The process ids below `root`, children and theirs, found by reading every
/// `/proc/PID/stat` (`/proc/PID/task/TID/children` is not on every kernel).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may end between the listing and the read: skip it.
        let Ok(fields) = stat_fields(pid) else {
            continue;
        };
        if let Some(parent) = fields.get(1).and_then(|f| f.parse().ok()) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            next.push(child);
        }
    }
    found
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): the first one is field 3, the state.
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    Ok(stat
        .rsplit_once(')')
        .context("no command name in /proc/…/stat")?
        .1
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Field `number` (as man 5 proc counts them, from 1) of a process's stat.
fn field(fields: &[String], number: usize) -> anyhow::Result<u64> {
    Ok(fields
        .get(number - 3)
        .context("/proc/…/stat is too short")?
        .parse()?)
}

/// CPU seconds, user and system, that `root` and its descendants have used
/// so far: each live process's own time (utime, stime) and the time of its
/// children that have ended and been waited for (cutime, cstime), which the
/// kernel adds to the parent when it reaps them. In clock ticks of 1/100 s
/// (USER_HZ, fixed at 100 in Linux's interface).
///
/// A child reaped between the reading of its parent and its own is missed;
/// callers measure while the connections (and so websockify's children) are
/// still open, so that none ends during the reading.
pub fn cpu_seconds(root: u32) -> anyhow::Result<f64> {
    let ticks = |pid: u32| -> anyhow::Result<u64> {
        let fields = stat_fields(pid)?;
        Ok(field(&fields, 14)? + field(&fields, 15)? + field(&fields, 16)? + field(&fields, 17)?)
    };
    let mut total = ticks(root)?;
    for pid in descendants(root) {
        // Gone since the listing: its time is in its parent's cutime now.
        total += ticks(pid).unwrap_or(0);
    }
    Ok(total as f64 / 100.0)
}

/// Resident memory of a process tree, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident set sizes added up: a page that several processes share
    /// (websockify's children share their parent's interpreter) counts once
    /// for each of them.
    pub rss: u64,
    /// Proportional set sizes added up: a shared page counts as its share
    /// in each process, so the sum is what the tree really holds.
    pub pss: u64,
    /// How many processes were counted.
    pub processes: usize,
}

/// Rss and Pss of `root` and its descendants, from `/proc/PID/smaps_rollup`.
pub fn memory(root: u32) -> anyhow::Result<Memory> {
    let one = |pid: u32| -> anyhow::Result<(u64, u64)> {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let kib = |name: &str| -> anyhow::Result<u64> {
            rollup
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/{pid}/smaps_rollup"))
        };
        Ok((kib("Rss:")? * 1024, kib("Pss:")? * 1024))
    };
    let (rss, pss) = one(root)?;
    let mut total = Memory {
        rss,
        pss,
        processes: 1,
    };
    for pid in descendants(root) {
        if let Ok((rss, pss)) = one(pid) {
            total.rss += rss;
            total.pss += pss;
            total.processes += 1;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_found_and_counted() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert!(descendants(me).contains(&child.id()));
        let memory = memory(me).unwrap();
        assert!(memory.processes >= 2, "{memory:?}");
        assert!(memory.pss > 0 && memory.rss >= memory.pss, "{memory:?}");
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
