//! Imports from files: an OCI layout directory, the same layout as a tar, and a `docker save`
//! archive made by skopeo from it. All three must give the same tree and config.

use std::path::PathBuf;
use std::process::Command;

use hearth_image::{ImageStore, ImportError};
use hearth_test_support::oci_layout::{Compression, Entry, TestConfig, TestImage};
use hearth_test_support::registry::require;

fn store(dir: &tempfile::TempDir) -> ImageStore {
    ImageStore::new(
        dir.path().join("images"),
        dir.path().join("blobs"),
        PathBuf::from("/usr/bin/mkfs.erofs"),
    )
}

fn layout() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let digest = TestImage::new(TestConfig {
        cmd: vec!["/bin/true".into()],
        user: Some("7".into()),
        ..TestConfig::default()
    })
    .layer(&[Entry::file("etc/motd", "imported")], Compression::Gzip)
    .unwrap()
    .write_layout(dir.path(), "1")
    .unwrap();
    (dir, digest)
}

#[test]
fn test_import_oci_layout_dir_and_tar_give_the_same_image() {
    let (layout, manifest) = layout();
    let state = tempfile::tempdir().unwrap();
    let store = store(&state);
    let from_dir = hearth_image::import(&store, layout.path(), Some("local/app:1")).unwrap();
    assert_eq!(from_dir.record.digest.to_string(), manifest);
    assert_eq!(from_dir.record.config.user.as_deref(), Some("7"));
    assert_eq!(
        store.resolve("docker.io/local/app:1").unwrap(),
        from_dir.record.digest
    );

    let tar_path = state.path().join("layout.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
    builder.append_dir_all(".", layout.path()).unwrap();
    builder.finish().unwrap();
    let from_tar = hearth_image::import(&store, &tar_path, None).unwrap();
    assert_eq!(from_tar.record.digest, from_dir.record.digest);
    assert!(
        hearth_image::base_files(&store.rootfs(&from_tar.record.digest))
            .unwrap()
            .iter()
            .all(|layer| layer.is_file())
    );
}

#[test]
fn test_import_docker_archive_from_skopeo() {
    require("skopeo", "skopeo").unwrap();
    let (layout, _) = layout();
    let state = tempfile::tempdir().unwrap();
    let archive = state.path().join("saved.tar");
    let status = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:1", layout.path().display()))
        .arg(format!("docker-archive:{}:saved/app:2", archive.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let store = store(&state);
    let imported = hearth_image::import(&store, &archive, None).unwrap();
    assert_eq!(imported.name.as_deref(), Some("docker.io/saved/app:2"));
    assert_eq!(imported.record.config.cmd, ["/bin/true"]);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn test_import_unknown_file_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let junk = state.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    let err = hearth_image::import(&store(&state), &junk, None).unwrap_err();
    assert!(matches!(err, ImportError::UnknownFormat { .. }), "{err:?}");
}
