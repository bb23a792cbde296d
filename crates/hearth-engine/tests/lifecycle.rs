//! The lifecycle rules as every client meets them through `Engine`, against a fake backend and
//! fake supervisors: state rows, conflicts, not-found and name rules need no VM. (The same
//! operations with real VMs are in the `hearth` crate's `it` suite, `engine.rs`.)

use std::fs::File;
use std::process::{Child, Command};

use hearth_engine::paths::StateDir;
use hearth_engine::{
    DetachOptions, Engine, EngineError, ErrorKind, ExecRequest, NoReporter, ResolvedSpec,
    SandboxSpec, SandboxState, SupervisorLauncher,
};
use hearth_vmm::{Accel, BackendInfo, StartVmError, VersionError, Vm, VmConfig, Vmm};

/// A backend that cannot start anything, as on a host whose VMM refuses.
#[derive(Debug)]
struct RefusingVmm;

#[async_trait::async_trait]
impl Vmm for RefusingVmm {
    fn describe(&self) -> BackendInfo {
        BackendInfo {
            name: "fake",
            accel: Accel::Tcg,
        }
    }

    async fn start(&self, _config: &VmConfig) -> Result<Box<dyn Vm>, StartVmError> {
        Err(StartVmError::ProgramMissing {
            program: "fake-vmm".into(),
            hint: "it is a test double".into(),
        })
    }

    fn version(&self) -> Result<String, VersionError> {
        Ok("fake 1".into())
    }
}

/// A supervisor that dies at once without recording anything.
#[derive(Debug)]
struct DyingLauncher;

impl SupervisorLauncher for DyingLauncher {
    fn launch(&self, _state: &StateDir, _id: &str, log: File) -> std::io::Result<Child> {
        Command::new("sh")
            .args(["-c", "echo supervisor gave up >&2; exit 3"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }
}

fn engine(dir: &tempfile::TempDir) -> Engine {
    Engine::with_vmm(
        StateDir::new(dir.path()),
        Box::new(RefusingVmm),
        Box::new(DyingLauncher),
    )
}

async fn resolved(engine: &Engine) -> ResolvedSpec {
    let spec = SandboxSpec {
        network: None,
        ..SandboxSpec::default()
    };
    engine.resolve(spec, &NoReporter).await.expect("resolve")
}

fn named(name: &str) -> DetachOptions {
    DetachOptions {
        name: Some(name.into()),
        ..DetachOptions::default()
    }
}

fn kind<T: std::fmt::Debug>(result: Result<T, EngineError>) -> ErrorKind {
    result.expect_err("the engine should refuse").kind()
}

#[tokio::test]
async fn test_created_sandbox_rules() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let spec = resolved(&engine).await;

    let record = engine.create(&spec, &named("web")).expect("create");
    assert_eq!(record.state, SandboxState::Created);
    assert_eq!(record.backend, "fake-tcg");
    assert_eq!(record.image, "default");
    // A second sandbox may not take the name; one with a bad name is never recorded.
    assert_eq!(
        kind(engine.create(&spec, &named("web"))),
        ErrorKind::Conflict
    );
    assert_eq!(
        kind(engine.create(&spec, &named("bad/name"))),
        ErrorKind::InvalidInput
    );
    assert_eq!(engine.list(true).expect("list").len(), 1);
    // A generated name is valid and unique.
    let other = engine
        .create(&spec, &DetachOptions::default())
        .expect("create");
    assert_ne!(other.name, record.name);

    // Nothing runs yet: exec and files are conflicts, not hangs.
    let exec = engine.exec("web", ExecRequest::default()).await;
    assert_eq!(kind(exec), ErrorKind::Conflict);
    assert_eq!(kind(engine.stat("web", "/").await), ErrorKind::Conflict);
    // Stopping what does not run is a no-op that names it.
    let stopped = engine.kill("web").await.expect("kill of a created sandbox");
    assert_eq!(stopped.id, record.id);

    // Unknown and ambiguous names.
    assert_eq!(kind(engine.find("nosuch")), ErrorKind::NotFound);
    assert_eq!(
        kind(engine.remove("nosuch", true).await),
        ErrorKind::NotFound
    );

    engine.remove(&record.id, false).await.expect("remove");
    assert_eq!(kind(engine.find("web")), ErrorKind::NotFound);
    assert!(!dir.path().join("sandboxes").join(&record.id).exists());
}

#[tokio::test]
async fn test_a_supervisor_that_dies_fails_the_start_and_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let spec = resolved(&engine).await;
    let record = engine.create(&spec, &named("fragile")).expect("create");

    let error = engine
        .start("fragile")
        .await
        .expect_err("its supervisor dies");
    assert!(
        matches!(error, EngineError::SupervisorDied { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("supervisor gave up"), "{error}");
    let failed = engine.find("fragile").expect("find");
    assert_eq!(failed.state, SandboxState::Failed);

    // Failed is not live: start may try again, and remove needs no force.
    assert!(matches!(
        engine.start("fragile").await,
        Err(EngineError::SupervisorDied { .. })
    ));
    engine.remove(&record.id, false).await.expect("remove");
}

#[tokio::test]
async fn test_a_detached_run_whose_supervisor_dies_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let spec = resolved(&engine).await;
    let error = engine
        .run_detached(&spec, &named("doomed"), false)
        .await
        .expect_err("its supervisor dies");
    assert_eq!(error.kind(), ErrorKind::Internal, "{error}");
    assert_eq!(
        engine.find("doomed").expect("find").state,
        SandboxState::Failed
    );
}

#[tokio::test]
async fn test_a_backend_that_cannot_start_fails_the_boot_and_leaves_no_run_dir() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&dir);
    let spec = resolved(&engine).await;
    let error = engine.run(&spec).await.expect_err("the backend refuses");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(
        hearth_engine::error_chain(&error).contains("fake-vmm"),
        "{error}"
    );
    let vms = dir.path().join("vms");
    let left: Vec<_> = std::fs::read_dir(&vms)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run dirs left: {left:?}");
}
