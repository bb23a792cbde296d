//! Layers of the host's own programs: bash and python3 with the shared libraries `ldd` names
//! and the standard library, copied at the same paths. Tests get an image with a real bash
//! and python3 (what the E2B SDKs need) without any registry but the local one.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

use crate::oci_layout::Entry;

/// Parts of Python's standard library no test imports, left out to keep the image small.
const PYTHON_SKIP: &[&str] = &[
    "test",
    "__pycache__",
    "dist-packages",
    "site-packages",
    "idlelib",
    "tkinter",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "turtledemo",
    "distutils",
    "sqlite3",
    "config-3.11-x86_64-linux-gnu",
    // Debian's points into /etc, which the image does not have.
    "sitecustomize.py",
];

/// Entries for `/bin/bash` and Debian's `python3.11` (as `/usr/bin/python3` too), their
/// libraries, Python's standard library, and `/etc/passwd` with `root` and `user` (1000).
pub fn bash_and_python_entries() -> anyhow::Result<Vec<Entry>> {
    entries_with(&[])
}

/// [`bash_and_python_entries`] plus the host's `git` (found on the PATH) at the same path.
pub fn bash_python_and_git_entries() -> anyhow::Result<Vec<Entry>> {
    let output = Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .context("looking for git")?;
    let git = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !git.starts_with('/') {
        bail!("git is missing: install it with `apt-get install git`");
    }
    entries_with(&[&git])
}

fn entries_with(extra: &[&str]) -> anyhow::Result<Vec<Entry>> {
    let python = "/usr/bin/python3.11";
    for program in ["/bin/bash", python] {
        if !Path::new(program).exists() {
            bail!("{program} is missing: install it with `apt-get install bash python3`");
        }
    }
    let mut files = BTreeSet::new();
    for program in ["/bin/bash", python].iter().chain(extra) {
        files.insert((*program).to_owned());
        files.extend(libraries(program)?);
    }
    let mut entries = Vec::new();
    let mut dirs = BTreeSet::new();
    for file in &files {
        add_parents(file, &mut dirs);
        let data = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        entries.push(Entry::File(rel(file), data, 0o755, 0, 0));
    }
    add_parents("/usr/bin/python3", &mut dirs);
    entries.push(Entry::symlink("usr/bin/python3", "python3.11"));
    tree(Path::new("/usr/lib/python3.11"), &mut entries, &mut dirs)?;
    // root, and an unprivileged `user` (E2B's default user name) whose home is /tmp.
    dirs.insert("etc".to_owned());
    entries.push(Entry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/tmp:/bin/bash\n",
    ));
    entries.push(Entry::file("etc/group", "root:x:0:\nuser:x:1000:\n"));
    let mut all: Vec<Entry> = dirs.iter().map(|d| Entry::dir(d)).collect();
    all.extend(entries);
    Ok(all)
}

/// The shared libraries `ldd` resolves for `program`, and its loader.
fn libraries(program: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    if !output.status.success() {
        bail!("ldd {program} failed");
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, or the loader alone.
            let path = line.split("=>").last()?.split_whitespace().next()?;
            path.starts_with('/').then(|| path.to_owned())
        })
        .collect())
}

fn tree(dir: &Path, entries: &mut Vec<Entry>, dirs: &mut BTreeSet<String>) -> anyhow::Result<()> {
    let path = dir.to_string_lossy().into_owned();
    add_parents(&format!("{path}/x"), dirs);
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {path}"))?
        .collect::<Result<_, _>>()?;
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let name = child.file_name().to_string_lossy().into_owned();
        if PYTHON_SKIP.contains(&name.as_str()) {
            continue;
        }
        let child_path = child.path();
        let full = child_path.to_string_lossy().into_owned();
        let kind = child.file_type()?;
        if kind.is_dir() {
            tree(&child_path, entries, dirs)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&child_path)?;
            entries.push(Entry::symlink(&rel(&full), &target.to_string_lossy()));
        } else if kind.is_file() {
            let data = std::fs::read(&child_path).with_context(|| format!("reading {full}"))?;
            entries.push(Entry::File(rel(&full), data, 0o644, 0, 0));
        }
    }
    Ok(())
}

/// Adds every directory above `path` (relative, as layers name them).
fn add_parents(path: &str, dirs: &mut BTreeSet<String>) {
    let mut dir = Path::new(path).parent();
    while let Some(d) = dir.filter(|d| d != &Path::new("/")) {
        dirs.insert(rel(&d.to_string_lossy()));
        dir = d.parent();
    }
}

fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}
