//! The OCI image store of a state dir, and how an image becomes a sandbox's root and process.

use std::path::PathBuf;

use hearth_host::find_program;
use hearth_image::{ImageConfig, ImageStore};

use crate::paths::StateDir;

/// The image store under `state`. Needs no VM backend, so `pull` and `image ls` work anywhere.
pub fn store(state: &StateDir) -> ImageStore {
    // A missing mkfs.erofs surfaces as a clear spawn error naming the program when a base is
    // built; `hearth doctor` says which package has it.
    let mkfs = find_program("mkfs.erofs").unwrap_or_else(|| PathBuf::from("mkfs.erofs"));
    ImageStore::new(state.oci_images_dir(), state.blobs_dir(), mkfs)
}

/// What the user asked for on top of the image config (`hearth run` flags).
#[derive(Debug, Clone, Default)]
pub struct ProcessOverrides {
    pub entrypoint: Option<String>,
    /// Trailing arguments: replace the image's Cmd.
    pub args: Vec<String>,
    /// `KEY=VALUE` entries that override the image's Env.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

/// The process a sandbox of `config` runs: docker's rules for Entrypoint/Cmd, image Env then
/// the user's, the user's working dir and user over the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProcess {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
}

pub fn process(config: &ImageConfig, overrides: ProcessOverrides) -> ImageProcess {
    let mut env = config.env.clone();
    env.extend(overrides.env);
    ImageProcess {
        argv: config.argv(overrides.entrypoint.as_deref(), &overrides.args),
        env,
        cwd: overrides.workdir.or_else(|| config.working_dir.clone()),
        user: overrides.user.or_else(|| config.user.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_process_user_flags_win_over_image_config() {
        let config = ImageConfig {
            cmd: vec!["sh".into()],
            env: vec!["A=1".into()],
            working_dir: Some("/srv".into()),
            user: Some("app".into()),
            ..ImageConfig::default()
        };
        let process = super::process(
            &config,
            ProcessOverrides {
                env: vec!["A=2".into()],
                workdir: Some("/tmp".into()),
                user: Some("0".into()),
                ..ProcessOverrides::default()
            },
        );
        assert_eq!(process.argv, ["sh"]);
        // The agent applies entries in order, so the user's comes last and wins.
        assert_eq!(process.env, ["A=1", "A=2"]);
        assert_eq!(process.cwd.as_deref(), Some("/tmp"));
        assert_eq!(process.user.as_deref(), Some("0"));
    }
}
