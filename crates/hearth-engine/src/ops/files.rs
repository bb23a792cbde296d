//! Files of a running detached sandbox: single files through the agent's own operations (any
//! image), and tar copies of trees (images with `tar`).

use std::path::Path;

use hearth_agent_proto::FileStat;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::{copy, files};

impl Engine {
    /// Metadata of guest `path` itself (symlinks are not followed).
    pub async fn stat(&self, query: &str, path: &str) -> Result<FileStat, EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(files::stat(&socket, path).await?)
    }

    /// The entries of guest directory `path`.
    pub async fn list_dir(&self, query: &str, path: &str) -> Result<Vec<FileStat>, EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(files::list(&socket, path).await?)
    }

    pub async fn mkdir(
        &self,
        query: &str,
        path: &str,
        mode: u32,
        parents: bool,
    ) -> Result<(), EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(files::mkdir(&socket, path, mode, parents).await?)
    }

    pub async fn remove_path(
        &self,
        query: &str,
        path: &str,
        recursive: bool,
    ) -> Result<(), EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(files::remove(&socket, path, recursive).await?)
    }

    /// Renames guest `path` to `to`, replacing a file there (rename(2)).
    pub async fn rename(&self, query: &str, path: &str, to: &str) -> Result<(), EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(files::rename(&socket, path, to).await?)
    }

    /// Copies guest file `path` into `out`; returns its metadata.
    pub async fn read_file(
        &self,
        query: &str,
        path: &str,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<FileStat, EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(files::read(&socket, path, out).await?)
    }

    /// Replaces guest file `path` with all of `input`; the guest puts it in place only once
    /// complete. Returns the bytes written.
    pub async fn write_file(
        &self,
        query: &str,
        path: &str,
        mode: u32,
        input: &mut (impl AsyncRead + Unpin),
    ) -> Result<u64, EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(files::write(&socket, path, mode, input).await?)
    }

    /// Copies host `src` (file or tree) into the guest: into `dest` when that is a directory
    /// there, else as `dest`.
    pub async fn copy_in(&self, query: &str, src: &Path, dest: &str) -> Result<(), EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(copy::to_guest(&socket, src, dest).await?)
    }

    /// Copies guest `src` to the host: into `dest` when that is a directory, else as `dest`.
    pub async fn copy_out(&self, query: &str, src: &str, dest: &Path) -> Result<(), EngineError> {
        let socket = self.agent_socket(&self.running(query)?.id);
        Ok(copy::from_guest(&socket, src, dest).await?)
    }
}
