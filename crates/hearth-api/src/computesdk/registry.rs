//! What the server keeps per sandbox (commands, terminals, sockets), by sandbox id and then
//! key, oldest first, with a bound per sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;

use super::Refused;

/// Per sandbox id, `(key, value)` oldest first.
type Entries<V> = HashMap<String, Vec<(String, Arc<V>)>>;

#[derive(Debug)]
pub(super) struct Registry<V> {
    inner: Mutex<Entries<V>>,
}

impl<V> Default for Registry<V> {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
        }
    }
}

impl<V> Registry<V> {
    fn lock(&self) -> MutexGuard<'_, Entries<V>> {
        // The map stays consistent across a panic elsewhere: every change is one call.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, sandbox: &str, key: &str) -> Option<Arc<V>> {
        self.lock()
            .get(sandbox)?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| Arc::clone(v))
    }

    /// Everything kept for `sandbox`, oldest first.
    pub fn all(&self, sandbox: &str) -> Vec<Arc<V>> {
        self.lock()
            .get(sandbox)
            .map(|entries| entries.iter().map(|(_, v)| Arc::clone(v)).collect())
            .unwrap_or_default()
    }

    /// Adds `value`; at `cap` entries the oldest `evictable` one makes room, and without one
    /// the insert is refused (429).
    pub fn insert(
        &self,
        sandbox: &str,
        key: String,
        value: Arc<V>,
        cap: usize,
        evictable: impl Fn(&V) -> bool,
    ) -> Result<(), Refused> {
        let mut map = self.lock();
        let entries = map.entry(sandbox.to_owned()).or_default();
        if entries.len() >= cap {
            match entries.iter().position(|(_, v)| evictable(v)) {
                Some(oldest) => {
                    entries.remove(oldest);
                }
                None => {
                    return Err(Refused(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("sandbox `{sandbox}` has {cap} of these already"),
                    ))
                }
            }
        }
        entries.push((key, value));
        Ok(())
    }

    pub fn remove(&self, sandbox: &str, key: &str) -> Option<Arc<V>> {
        let mut map = self.lock();
        let entries = map.get_mut(sandbox)?;
        let at = entries.iter().position(|(k, _)| k == key)?;
        let (_, value) = entries.remove(at);
        if entries.is_empty() {
            map.remove(sandbox);
        }
        Some(value)
    }

    pub fn forget(&self, sandbox: &str) {
        self.lock().remove(sandbox);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_full_sandbox_evicts_its_oldest_evictable_entry_or_refuses() {
        let registry = Registry::default();
        registry
            .insert("s", "a".into(), Arc::new(1), 2, |_| true)
            .unwrap();
        registry
            .insert("s", "b".into(), Arc::new(2), 2, |_| true)
            .unwrap();
        registry
            .insert("s", "c".into(), Arc::new(3), 2, |v| *v == 2)
            .unwrap();
        let kept: Vec<i32> = registry.all("s").iter().map(|v| **v).collect();
        assert_eq!(kept, [1, 3]);
        assert!(registry
            .insert("s", "d".into(), Arc::new(4), 2, |_| false)
            .is_err());
        assert_eq!(registry.remove("s", "a").as_deref(), Some(&1));
        assert!(registry.get("s", "a").is_none());
        registry.forget("s");
        assert!(registry.all("s").is_empty());
    }
}
