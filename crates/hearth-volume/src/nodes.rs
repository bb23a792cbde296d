//! The node table: which `NodeId` stands for which name in which directory.
//!
//! Nodes are names, not open descriptors: a node's host path is rebuilt from its parents on
//! every use and opened beneath the root, so the table never holds anything that could point
//! outside the volume, and its size is bounded by [`MAX_NODES`] rather than by descriptors.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use hearth_agent_proto::volume::{Name, NodeId, ROOT_NODE};
use nix::errno::Errno;

/// Most nodes the guest may hold at once; beyond this it gets `ENFILE` until it forgets some.
pub(crate) const MAX_NODES: usize = 1 << 20;

/// Name bytes the table may hold (each name is kept twice, in the node and in the index);
/// with [`MAX_NODES`] this bounds the table's memory whatever names the guest picks.
const MAX_NAME_BYTES: usize = 64 << 20;

/// Longest relative path a node may have; also bounds the parent walk if the table were ever
/// inconsistent (each step adds at least two bytes).
const MAX_PATH_LEN: usize = libc::PATH_MAX as usize;

#[derive(Debug)]
struct Node {
    parent: NodeId,
    name: Name,
    lookups: u64,
    /// Host inode when last looked up: a name that now holds another inode gets a new node,
    /// which is what the guest's kernel expects of a file replaced behind its back.
    ino: u64,
    /// Whether `(parent, name)` in the index still points here. A detached node (unlinked,
    /// replaced, superseded) resolves to nothing until the guest forgets it.
    attached: bool,
}

#[derive(Debug)]
pub(crate) struct Nodes {
    nodes: HashMap<NodeId, Node>,
    index: HashMap<(NodeId, Name), NodeId>,
    next_id: NodeId,
    /// Sum of the nodes' name lengths.
    name_bytes: usize,
}

impl Nodes {
    pub(crate) fn new(root_ino: u64) -> Self {
        let root = Node {
            parent: ROOT_NODE,
            name: Vec::new(),
            lookups: 1,
            ino: root_ino,
            attached: true,
        };
        Nodes {
            nodes: HashMap::from([(ROOT_NODE, root)]),
            index: HashMap::new(),
            next_id: ROOT_NODE + 1,
            name_bytes: 0,
        }
    }

    /// The node's path relative to the root (`.` for the root).
    pub(crate) fn path(&self, node: NodeId) -> Result<PathBuf, Errno> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut len = 0;
        let mut current = node;
        while current != ROOT_NODE {
            let entry = self.nodes.get(&current).ok_or(Errno::ESTALE)?;
            if !entry.attached {
                return Err(Errno::ENOENT);
            }
            len += entry.name.len() + 1;
            if len > MAX_PATH_LEN {
                return Err(Errno::ENAMETOOLONG);
            }
            parts.push(&entry.name);
            current = entry.parent;
        }
        if parts.is_empty() {
            if !self.nodes.contains_key(&node) {
                return Err(Errno::ESTALE);
            }
            return Ok(PathBuf::from("."));
        }
        let mut path = Vec::with_capacity(len);
        for part in parts.iter().rev() {
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(part);
        }
        Ok(PathBuf::from(OsStr::from_bytes(&path)))
    }

    /// Where the node lives: its parent and its name there.
    pub(crate) fn location(&self, node: NodeId) -> Result<(NodeId, &[u8]), Errno> {
        let entry = self.nodes.get(&node).ok_or(Errno::ESTALE)?;
        if node == ROOT_NODE || !entry.attached {
            return Err(Errno::ENOENT);
        }
        Ok((entry.parent, &entry.name))
    }

    /// Fails with `ENFILE` when a new node would not fit; checked before a call changes the
    /// host, so a full table never leaves a file behind that no node names.
    pub(crate) fn check_room(&self) -> Result<(), Errno> {
        if self.nodes.len() >= MAX_NODES
            || self.name_bytes + hearth_agent_proto::volume::MAX_NAME_LEN > MAX_NAME_BYTES
        {
            return Err(Errno::ENFILE);
        }
        Ok(())
    }

    /// The node for `name` in `parent`, counting one lookup: the existing one if it still has
    /// inode `ino`, else a new one.
    pub(crate) fn intern(
        &mut self,
        parent: NodeId,
        name: &[u8],
        ino: u64,
    ) -> Result<NodeId, Errno> {
        let key = (parent, name.to_vec());
        let existing = self.index.get(&key).copied();
        if let Some(id) = existing {
            if let Some(node) = self.nodes.get_mut(&id) {
                if node.ino == ino {
                    node.lookups = node.lookups.saturating_add(1);
                    return Ok(id);
                }
            }
        }
        self.check_room()?;
        let id = self.next_id;
        self.next_id = id.checked_add(1).ok_or(Errno::ENFILE)?;
        if let Some(old) = existing.and_then(|old| self.nodes.get_mut(&old)) {
            old.attached = false;
        }
        self.name_bytes += name.len();
        self.nodes.insert(
            id,
            Node {
                parent,
                name: key.1.clone(),
                lookups: 1,
                ino,
                attached: true,
            },
        );
        self.index.insert(key, id);
        Ok(id)
    }

    /// Gives back `count` lookups; the node goes away at zero. The root never does.
    pub(crate) fn forget(&mut self, node: NodeId, count: u64) {
        if node == ROOT_NODE {
            return;
        }
        let Some(entry) = self.nodes.get_mut(&node) else {
            return;
        };
        entry.lookups = entry.lookups.saturating_sub(count);
        if entry.lookups > 0 {
            return;
        }
        if let Some(entry) = self.nodes.remove(&node) {
            self.name_bytes = self.name_bytes.saturating_sub(entry.name.len());
            let key = (entry.parent, entry.name);
            if self.index.get(&key) == Some(&node) {
                self.index.remove(&key);
            }
        }
    }

    /// `name` in `parent` is gone (unlinked, or replaced by a rename).
    pub(crate) fn detach(&mut self, parent: NodeId, name: &[u8]) {
        if let Some(id) = self.index.remove(&(parent, name.to_vec())) {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.attached = false;
            }
        }
    }

    /// `name` in `parent` was renamed to `new_name` in `new_parent`, replacing what was there.
    pub(crate) fn rename(
        &mut self,
        parent: NodeId,
        name: &[u8],
        new_parent: NodeId,
        new_name: &[u8],
    ) {
        let moved = self.index.remove(&(parent, name.to_vec()));
        self.detach(new_parent, new_name);
        if let Some(id) = moved {
            self.place(id, new_parent, new_name);
        }
    }

    /// The two names swapped their inodes (`RENAME_EXCHANGE`).
    pub(crate) fn exchange(
        &mut self,
        parent: NodeId,
        name: &[u8],
        new_parent: NodeId,
        new_name: &[u8],
    ) {
        let first = self.index.remove(&(parent, name.to_vec()));
        let second = self.index.remove(&(new_parent, new_name.to_vec()));
        if let Some(id) = first {
            self.place(id, new_parent, new_name);
        }
        if let Some(id) = second {
            self.place(id, parent, name);
        }
    }

    fn place(&mut self, id: NodeId, parent: NodeId, name: &[u8]) {
        if let Some(node) = self.nodes.get_mut(&id) {
            self.name_bytes = self.name_bytes.saturating_sub(node.name.len()) + name.len();
            node.parent = parent;
            node.name = name.to_vec();
            self.index.insert((parent, name.to_vec()), id);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_parents() {
        let mut nodes = Nodes::new(2);
        assert_eq!(nodes.path(ROOT_NODE), Ok(PathBuf::from(".")));
        let dir = nodes.intern(ROOT_NODE, b"d", 10).unwrap();
        let file = nodes.intern(dir, b"f", 11).unwrap();
        assert_eq!(nodes.path(file), Ok(PathBuf::from("d/f")));
        assert_eq!(nodes.path(999), Err(Errno::ESTALE));
    }

    #[test]
    fn lookups_are_counted_and_forgotten() {
        let mut nodes = Nodes::new(2);
        let a = nodes.intern(ROOT_NODE, b"a", 10).unwrap();
        assert_eq!(nodes.intern(ROOT_NODE, b"a", 10), Ok(a));
        nodes.forget(a, 1);
        assert!(nodes.path(a).is_ok());
        nodes.forget(a, 1);
        assert_eq!(nodes.path(a), Err(Errno::ESTALE));
        assert_eq!(nodes.len(), 1);
        nodes.forget(ROOT_NODE, u64::MAX);
        assert!(nodes.path(ROOT_NODE).is_ok());
    }

    #[test]
    fn a_new_inode_under_a_name_gets_a_new_node() {
        let mut nodes = Nodes::new(2);
        let a = nodes.intern(ROOT_NODE, b"a", 10).unwrap();
        let b = nodes.intern(ROOT_NODE, b"a", 20).unwrap();
        assert_ne!(a, b);
        assert_eq!(nodes.path(a), Err(Errno::ENOENT));
        assert_eq!(nodes.path(b), Ok(PathBuf::from("a")));
        nodes.forget(a, 1);
        assert_eq!(nodes.path(b), Ok(PathBuf::from("a")));
    }

    #[test]
    fn rename_moves_and_replaces() {
        let mut nodes = Nodes::new(2);
        let dir = nodes.intern(ROOT_NODE, b"d", 10).unwrap();
        let child = nodes.intern(dir, b"c", 11).unwrap();
        let target = nodes.intern(ROOT_NODE, b"e", 12).unwrap();
        nodes.rename(ROOT_NODE, b"d", ROOT_NODE, b"e");
        assert_eq!(nodes.path(child), Ok(PathBuf::from("e/c")));
        assert_eq!(nodes.path(target), Err(Errno::ENOENT));
        assert_eq!(nodes.intern(ROOT_NODE, b"e", 10), Ok(dir));
        // Forgetting the replaced node must not drop the index entry of the one that moved in.
        nodes.forget(target, 1);
        assert_eq!(nodes.intern(ROOT_NODE, b"e", 10), Ok(dir));
    }

    #[test]
    fn exchange_swaps() {
        let mut nodes = Nodes::new(2);
        let a = nodes.intern(ROOT_NODE, b"a", 10).unwrap();
        let b = nodes.intern(ROOT_NODE, b"b", 11).unwrap();
        nodes.exchange(ROOT_NODE, b"a", ROOT_NODE, b"b");
        assert_eq!(nodes.path(a), Ok(PathBuf::from("b")));
        assert_eq!(nodes.path(b), Ok(PathBuf::from("a")));
    }

    #[test]
    fn paths_are_bounded() {
        let mut nodes = Nodes::new(2);
        let mut parent = ROOT_NODE;
        for i in 0..MAX_PATH_LEN {
            parent = nodes.intern(parent, b"x", i as u64 + 10).unwrap();
        }
        assert_eq!(nodes.path(parent), Err(Errno::ENAMETOOLONG));
    }
}
