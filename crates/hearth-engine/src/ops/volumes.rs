//! Named volumes: create, list, inspect, remove. `rm` refuses a volume that a sandbox's config
//! mounts (a detached sandbox in any state, or a one-shot run that is still live), as docker
//! refuses to remove a volume a container uses.

use crate::engine::Engine;
use crate::error::EngineError;
use crate::paths::StateDir;
use crate::volumes::{disk_usage, VolumeError, VolumeInfo, VolumeMeta, VolumeStore};

fn store(state: &StateDir) -> VolumeStore {
    VolumeStore::new(state.volumes_dir())
}

impl Engine {
    /// Makes an empty volume.
    pub fn volume_create(&self, name: &str) -> Result<VolumeMeta, EngineError> {
        Ok(store(self.state()).create(name)?)
    }

    /// Every volume, by name, with its size and users.
    pub fn volumes(&self) -> Result<Vec<VolumeInfo>, EngineError> {
        let metas = store(self.state()).list()?;
        let users = self.volume_users()?;
        Ok(metas.into_iter().map(|meta| info(meta, &users)).collect())
    }

    pub fn volume_inspect(&self, name: &str) -> Result<VolumeInfo, EngineError> {
        let meta = store(self.state()).get(name)?;
        Ok(info(meta, &self.volume_users()?))
    }

    /// Removes a volume and its files, unless a sandbox uses it.
    pub fn volume_remove(&self, name: &str) -> Result<VolumeMeta, EngineError> {
        let store = store(self.state());
        store.get(name)?;
        let used_by: Vec<String> = self
            .volume_users()?
            .into_iter()
            .filter(|(volume, _)| volume == name)
            .map(|(_, user)| user)
            .collect();
        if !used_by.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                used_by,
            }
            .into());
        }
        Ok(store.remove(name)?)
    }

    /// (volume, sandbox) for every mount of a named volume: detached sandboxes by their stored
    /// config, live one-shot runs by the list their run dir holds.
    fn volume_users(&self) -> Result<Vec<(String, String)>, EngineError> {
        let mut users = Vec::new();
        let records = self.db()?.list()?;
        for record in &records {
            // A record whose spec is gone mounts nothing any more.
            let Ok(spec) = crate::supervisor::read_spec(self.state(), &record.id) else {
                continue;
            };
            for mount in &spec.config.mounts {
                if let Some(volume) = &mount.volume {
                    users.push((volume.clone(), record.name.clone()));
                }
            }
        }
        let Ok(run_dirs) = std::fs::read_dir(self.state().vms_dir()) else {
            return Ok(users);
        };
        for dir in run_dirs.flatten() {
            let id = dir.file_name().to_string_lossy().into_owned();
            if records.iter().any(|r| r.id == id)
                || crate::gc::owner_gone(&dir.path()) != Some(false)
            {
                continue;
            }
            let list = crate::sandbox::volumes_in_use_path(&dir.path());
            let Ok(text) = std::fs::read_to_string(list) else {
                continue;
            };
            for volume in text.lines().filter(|l| !l.is_empty()) {
                users.push((volume.to_owned(), id.clone()));
            }
        }
        Ok(users)
    }
}

fn info(meta: VolumeMeta, users: &[(String, String)]) -> VolumeInfo {
    let used_by = users
        .iter()
        .filter(|(volume, _)| *volume == meta.name)
        .map(|(_, user)| user.clone())
        .collect();
    VolumeInfo {
        size: disk_usage(&meta.path),
        meta,
        used_by,
    }
}
