//! Processes in a running detached sandbox.

use hearth_agent_proto::ExecRequest;

use crate::engine::Engine;
use crate::error::EngineError;
use crate::ops::run::Started;

impl Engine {
    /// Starts a process in running sandbox `query` (`hearth exec`). Its input half sends stdin,
    /// resizes and signals; its output yields stdout, stderr and the exit status.
    pub async fn exec(&self, query: &str, request: ExecRequest) -> Result<Started, EngineError> {
        let record = self.running(query)?;
        Ok(crate::exec::start(&self.agent_socket(&record.id), request).await?)
    }

    /// Where the agent of sandbox `id`, owned by another process, is reached.
    pub(crate) fn agent_socket(&self, id: &str) -> std::path::PathBuf {
        crate::sandbox::agent_socket_path(&self.state().vms_dir().join(id))
    }
}
