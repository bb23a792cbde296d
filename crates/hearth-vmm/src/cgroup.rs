//! A cgroup per VMM bounding its memory (guest RAM plus QEMU's own), CPU (its vcpu count) and
//! tasks: v2 where the host mounts the unified hierarchy at `/sys/fs/cgroup`, v1 (one
//! directory per controller) otherwise. Each VMM's group is `hearth/<name>` under every
//! controller, `<name>` being its run dir's name (the sandbox id), so gc finds it again.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

const ROOT: &str = "/sys/fs/cgroup";
/// The parent group of every VMM's group.
pub(crate) const PARENT: &str = "hearth";

/// What QEMU needs above guest RAM under TCG: its translation cache (grows with the code the
/// guest runs), device and migration buffers and its own heap. A booted, idle 512 MiB guest's
/// QEMU measured about 150 MiB RSS on top of the RAM it touched; a 512 MiB guest driven out of
/// RAM peaked at 775 MiB of its group, page cache included (see docs/security.md). This leaves
/// room for a busy one and for a migration's buffers.
pub const MEMORY_OVERHEAD_MIB: u64 = 384;

/// Tasks (threads) a VMM may run: one per vcpu, QEMU's RCU, I/O and main threads, and its
/// worker pool of up to 64 threads, with room to spare. Processes it cannot make anyway
/// (seccomp's spawn=deny).
pub const MAX_TASKS: u64 = 256;

/// The CFS period a CPU quota is given in.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("failed to create cgroup `{}`", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to write `{value}` to `{}`", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

/// The limits one VMM's group gets.
#[derive(Debug, Clone, Copy)]
pub struct CgroupLimits {
    pub memory_bytes: u64,
    pub vcpus: u8,
    pub tasks: u64,
}

impl CgroupLimits {
    /// The limits for a VM with `mem_size_mib` of guest RAM and `vcpus` vcpus.
    pub fn for_vm(mem_size_mib: u32, vcpus: u8) -> Self {
        CgroupLimits {
            memory_bytes: (u64::from(mem_size_mib) + MEMORY_OVERHEAD_MIB) << 20,
            vcpus,
            tasks: MAX_TASKS,
        }
    }
}

impl CgroupLimits {
    /// The same limits as Firecracker's jailer sets them: its `--cgroup-version` and one
    /// `--cgroup <file>=<value>` per limit, for the group `<PARENT>/<name>` it makes under
    /// every controller named (so [`remove_cgroup`] finds it as it finds a QEMU's).
    pub(crate) fn jailer_args(self) -> (u8, Vec<String>) {
        let quota = u64::from(self.vcpus) * CPU_PERIOD_US;
        if is_v2() {
            // No `memory.swap.max`, unlike `create`: where swap is not accounted that file is
            // absent, and the jailer fails on a file it cannot write rather than skipping it.
            let properties = vec![
                format!("memory.max={}", self.memory_bytes),
                format!("pids.max={}", self.tasks),
                format!("cpu.max={quota} {CPU_PERIOD_US}"),
            ];
            (2, properties)
        } else {
            let properties = vec![
                format!("memory.limit_in_bytes={}", self.memory_bytes),
                format!("cpu.cfs_period_us={CPU_PERIOD_US}"),
                format!("cpu.cfs_quota_us={quota}"),
                format!("pids.max={}", self.tasks),
            ];
            (1, properties)
        }
    }
}

/// One VMM's group, removed when dropped (once the VMM is gone).
#[derive(Debug)]
pub struct VmCgroup {
    dirs: Vec<PathBuf>,
}

fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

/// Which cgroup hierarchy VMM groups are made in: 2 where the host mounts the unified
/// hierarchy at `/sys/fs/cgroup`, else 1 (a hybrid host's `unified` mount has no controllers
/// to limit with).
pub fn version() -> u8 {
    if is_v2() {
        2
    } else {
        1
    }
}

/// The group directories `name` has under each controller.
fn dirs_for(name: &str) -> Vec<PathBuf> {
    if is_v2() {
        vec![Path::new(ROOT).join(PARENT).join(name)]
    } else {
        ["memory", "cpu", "pids"]
            .iter()
            .map(|controller| Path::new(ROOT).join(controller).join(PARENT).join(name))
            .collect()
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        value: value.to_owned(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Create {
        path: path.to_owned(),
        source,
    })
}

impl VmCgroup {
    /// Makes group `name` with `limits` under every controller.
    pub fn create(name: &str, limits: CgroupLimits) -> Result<Self, CgroupError> {
        let quota = u64::from(limits.vcpus) * CPU_PERIOD_US;
        let memory = limits.memory_bytes.to_string();
        let tasks = limits.tasks.to_string();
        let group = VmCgroup {
            dirs: dirs_for(name),
        };
        if is_v2() {
            let parent = Path::new(ROOT).join(PARENT);
            create_dir(&parent)?;
            write(
                &Path::new(ROOT).join("cgroup.subtree_control"),
                "+memory +cpu +pids",
            )?;
            write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids")?;
            let dir = &group.dirs[0];
            create_dir(dir)?;
            write(&dir.join("memory.max"), &memory)?;
            // Absent where swap is not accounted; then there is nothing to bound.
            let _ = write(&dir.join("memory.swap.max"), "0");
            write(&dir.join("pids.max"), &tasks)?;
            write(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
        } else {
            for dir in &group.dirs {
                create_dir(dir)?;
            }
            let [memory_dir, cpu_dir, pids_dir] = [&group.dirs[0], &group.dirs[1], &group.dirs[2]];
            write(&memory_dir.join("memory.limit_in_bytes"), &memory)?;
            write(
                &cpu_dir.join("cpu.cfs_period_us"),
                &CPU_PERIOD_US.to_string(),
            )?;
            write(&cpu_dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            write(&pids_dir.join("pids.max"), &tasks)?;
        }
        Ok(group)
    }

    /// The group's `cgroup.procs` files, open for the child to write itself into before exec.
    pub(crate) fn procs(&self) -> Result<Vec<File>, CgroupError> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|source| CgroupError::Write {
                        path,
                        value: "0".to_owned(),
                        source,
                    })
            })
            .collect()
    }

    /// The group directories, memory's first.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl Drop for VmCgroup {
    fn drop(&mut self) {
        remove_dirs(&self.dirs);
    }
}

/// Sends SIGKILL to every process in group `name` and returns their pids: what gc calls for a
/// VMM whose owner died. A QEMU dies with its owner, but a Firecracker the jailer started does
/// not (its uid change cleared the parent-death signal), and its command line does not name
/// the run dir, so its group is how it is found.
pub fn kill_tasks(name: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = dirs_for(name)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("cgroup.procs")).ok())
        .flat_map(|procs| {
            procs
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    for pid in &pids {
        if let Ok(raw) = i32::try_from(*pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    pids
}

/// Removes group `name` if it is there and empty; what gc calls for a VMM whose owner died.
/// Returns whether something was removed.
pub fn remove_cgroup(name: &str) -> bool {
    let dirs: Vec<PathBuf> = dirs_for(name).into_iter().filter(|d| d.exists()).collect();
    !dirs.is_empty() && remove_dirs(&dirs)
}

/// A group is removable once its last task is reaped, which can trail the VMM's exit by a
/// moment; a few short retries cover that.
fn remove_dirs(dirs: &[PathBuf]) -> bool {
    let mut all = true;
    for dir in dirs {
        let mut removed = false;
        for _ in 0..40 {
            match std::fs::remove_dir(dir) {
                Ok(()) => {
                    removed = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    removed = true;
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        if !removed {
            tracing::warn!(cgroup = %dir.display(), "could not remove a VMM's cgroup");
            all = false;
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_kill_tasks_kills_what_is_in_the_group_and_then_it_can_go() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIP test_kill_tasks_kills_what_is_in_the_group_and_then_it_can_go: needs root"
            );
            return;
        }
        let name = format!("test-kill-{}", std::process::id());
        let group = VmCgroup::create(&name, CgroupLimits::for_vm(64, 1)).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        for mut procs in group.procs().unwrap() {
            std::io::Write::write_all(&mut procs, child.id().to_string().as_bytes()).unwrap();
        }
        assert_eq!(kill_tasks(&name), [child.id()]);
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        drop(group);
        assert!(dirs_for(&name).iter().all(|dir| !dir.exists()));
    }
}
