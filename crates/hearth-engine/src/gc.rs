//! Garbage collection: compares the host with the state database and removes what sandboxes
//! whose supervisor died left behind. It only touches what hearth made: rows, run dirs under
//! the state dir, and processes whose command line names such a run dir.

use std::path::Path;
use std::time::{Duration, SystemTime};

use hearth_host::processes::processes_in;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::paths::StateDir;
use crate::state::{SandboxRecord, SandboxState, StateDb, StateError};

/// A run dir without an owner lock (a crash between creating the dir and locking it, or a dir
/// from an older hearth) is considered abandoned only this old and without live processes.
const ORPHAN_DIR_AGE: Duration = Duration::from_secs(60);
/// A `starting` row gets its supervisor pid as soon as the CLI has spawned the supervisor, a
/// matter of milliseconds; one still without a pid after this long lost its CLI in between.
const ORPHAN_STARTING_AGE: Duration = Duration::from_secs(300);

/// What one collection removed.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Sandboxes whose supervisor was gone, now recorded as exited.
    pub marked_exited: Vec<String>,
    /// Processes killed (VMM and helpers of dead sandboxes).
    pub killed_pids: Vec<u32>,
    /// Run dirs removed, and temporary dirs of snapshots whose save was cut short.
    pub removed_dirs: Vec<String>,
    /// Sandboxes whose network (namespace, host link, host table) was removed.
    pub removed_networks: Vec<String>,
}

/// Whether `record`'s supervisor process is alive (and really is its supervisor, not a reused
/// pid).
pub fn supervisor_alive(record: &SandboxRecord) -> bool {
    let Some(pid) = record.supervisor_pid else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&b"supervise".as_slice()) && args.contains(&record.id.as_bytes())
}

/// Runs one collection over `state`.
pub fn collect(state: &StateDir) -> Result<GcReport, StateError> {
    let db = StateDb::open(&state.database())?;
    let mut report = GcReport::default();
    let records = db.list()?;
    for record in &records {
        if !record.state.is_live() || supervisor_alive(record) || being_spawned(record) {
            continue;
        }
        let run_dir = state.vms_dir().join(&record.id);
        report.killed_pids.extend(kill_processes_in(&run_dir));
        report
            .killed_pids
            .extend(hearth_vmm::cgroup::kill_tasks(&record.id));
        hearth_vmm::firecracker::unmount_leftovers(&run_dir);
        remove_dir(&run_dir, &mut report);
        remove_network(&record.id, &mut report);
        remove_cgroup(&record.id, &mut report);
        db.set_ended(
            &record.id,
            SandboxState::Exited,
            None,
            Some("its supervisor died; cleaned up by gc"),
        )?;
        report.marked_exited.push(record.id.clone());
    }
    if let Ok(entries) = std::fs::read_dir(state.vms_dir()) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let live_row = records
                .iter()
                .any(|r| r.id == name && r.state.is_live() && supervisor_alive(r));
            let orphaned = match owner_gone(&dir) {
                Some(gone) => gone,
                None => is_old(&dir) && processes_in(&dir).is_empty(),
            };
            if live_row || !orphaned {
                continue;
            }
            // The owner is dead; its VMM dies with it (PDEATHSIG) but may not be gone yet,
            // except a jailed Firecracker, which only its cgroup finds.
            report.killed_pids.extend(kill_processes_in(&dir));
            report
                .killed_pids
                .extend(hearth_vmm::cgroup::kill_tasks(&name));
            hearth_vmm::firecracker::unmount_leftovers(&dir);
            remove_dir(&dir, &mut report);
            remove_network(&name, &mut report);
            remove_cgroup(&name, &mut report);
        }
    }
    // Staging dirs and partial downloads of pulls that died; a live pull's are locked.
    match crate::images::store(state).remove_abandoned() {
        Ok(removed) => report
            .removed_dirs
            .extend(removed.iter().map(|p| p.display().to_string())),
        Err(e) => {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "gc could not remove what interrupted pulls left"
            );
        }
    }
    let stale = crate::snapshots::SnapshotStore::new(state).collect_stale();
    report
        .removed_dirs
        .extend(stale.iter().map(|dir| dir.display().to_string()));
    Ok(report)
}

fn remove_dir(dir: &Path, report: &mut GcReport) {
    if std::fs::remove_dir_all(dir).is_ok() {
        report.removed_dirs.push(dir.display().to_string());
    }
}

/// Removes the cgroup of a dead sandbox's VMM (see `hearth_vmm::cgroup`), once it is empty.
fn remove_cgroup(id: &str, report: &mut GcReport) {
    if hearth_vmm::cgroup::remove_cgroup(id) {
        report.removed_dirs.push(format!("cgroup hearth/{id}"));
    }
}

/// Removes what a dead sandbox's network left on the host, found by the names its id gives.
fn remove_network(id: &str, report: &mut GcReport) {
    let Ok(names) = hearth_net::NetNames::for_sandbox(id) else {
        return;
    };
    if hearth_net::leftovers(&names).is_empty() {
        return;
    }
    match hearth_net::remove_by_names(id, &names) {
        Ok(()) => report.removed_networks.push(id.to_owned()),
        Err(e) => {
            tracing::warn!(sandbox = %id, error = &e as &dyn std::error::Error, "gc could not remove a network");
        }
    }
}

/// Whether the process that owned run dir `dir` is gone: `Some(true)` if its owner lock can be
/// taken, `Some(false)` if it is held, `None` if the dir has no lock file.
pub(crate) fn owner_gone(dir: &Path) -> Option<bool> {
    let file = std::fs::File::open(crate::sandbox::owner_lock_path(dir)).ok()?;
    // Taken only to test it: the lock is released again at the end of the statement.
    Some(Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok())
}

/// Whether `record` is a `starting` row whose CLI may still be spawning its supervisor: no pid
/// yet, and younger than [`ORPHAN_STARTING_AGE`].
fn being_spawned(record: &SandboxRecord) -> bool {
    let age = crate::state::unix_now().saturating_sub(record.created_at);
    record.supervisor_pid.is_none() && age < ORPHAN_STARTING_AGE.as_secs() as i64
}

pub(crate) fn is_old(dir: &Path) -> bool {
    std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age > ORPHAN_DIR_AGE)
}

fn kill_processes_in(run_dir: &Path) -> Vec<u32> {
    let pids = processes_in(run_dir);
    for pid in &pids {
        if let Ok(raw) = i32::try_from(*pid) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starting_row(id: &str, created_at: i64) -> SandboxRecord {
        SandboxRecord {
            created_at,
            ..crate::state::test_record(id, &format!("n{id}"))
        }
    }

    #[test]
    fn test_gc_collects_old_starting_rows_without_a_supervisor_but_not_young_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let db = StateDb::open(&state.database()).unwrap();
        let now = crate::state::unix_now();
        // Ids no real sandbox has, so gc's network teardown finds nothing of theirs.
        db.insert(&starting_row("0000000000a1", now - 3600))
            .unwrap();
        db.insert(&starting_row("0000000000a2", now)).unwrap();

        let report = collect(&state).unwrap();

        assert_eq!(report.marked_exited, vec!["0000000000a1".to_owned()]);
        assert_eq!(
            db.find("0000000000a2").unwrap().state,
            SandboxState::Starting
        );
    }
}
