//! Pulls from a real `docker-registry` on 127.0.0.1: caching, and every kind of bad input the
//! registry or a layer can present. No VM here; `hearth/tests/it/images.rs` boots the results.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hearth_image::{
    layer::LayerError, BlobFetchError, Digest, ImageRef, ImageStore, PullConfig, PullError,
    PullReporter, RegistryTimeouts, StoreError,
};
use hearth_test_support::cutting_proxy::CuttingProxy;
use hearth_test_support::oci_layout::{
    busybox_entries, incompressible, python_tar, Compression, Entry, TestConfig, TestImage,
};
use hearth_test_support::registry::LocalRegistry;
use hearth_test_support::tmpfs::SmallTmpfs;

/// A state dir's image store in a temp dir.
struct Store {
    dir: tempfile::TempDir,
    store: ImageStore,
}

fn store() -> Store {
    store_in(&std::env::temp_dir())
}

fn store_in(parent: &Path) -> Store {
    let dir = tempfile::tempdir_in(parent).unwrap();
    let store = ImageStore::new(
        dir.path().join("images"),
        dir.path().join("blobs"),
        PathBuf::from("/usr/bin/mkfs.erofs"),
    );
    Store { dir, store }
}

/// Counts downloads, so a test can tell a cached pull from a fresh one.
#[derive(Default)]
struct Counter {
    downloads: AtomicUsize,
    cached: AtomicUsize,
}

impl PullReporter for Counter {
    fn on_layer_start(&self, _: &Digest, _: u64) {
        self.downloads.fetch_add(1, Ordering::SeqCst);
    }
    fn on_layer_cached(&self, _: &Digest, _: u64) {
        self.cached.fetch_add(1, Ordering::SeqCst);
    }
    fn on_layer_progress(&self, _: &Digest, _: u64) {}
    fn on_layer_done(&self, _: &Digest) {}
    fn on_build(&self, _: &Digest) {}
}

/// An image of one gzip layer holding one file.
fn one_file_image(name: &str, data: Vec<u8>) -> TestImage {
    TestImage::new(TestConfig::default())
        .layer(
            &[Entry::File(name.into(), data, 0o644, 0, 0)],
            Compression::Gzip,
        )
        .unwrap()
}

fn push(registry: &LocalRegistry, image: &TestImage, repo: &str) -> String {
    let layout = tempfile::tempdir().unwrap();
    let digest = image.write_layout(layout.path(), "1").unwrap();
    registry.push_layout(layout.path(), "1", repo).unwrap();
    digest
}

fn reference(registry: &LocalRegistry, repo: &str) -> ImageRef {
    format!("{}/{repo}:1", registry.host()).parse().unwrap()
}

/// Short limits, so tests of a failing registry end in seconds.
fn quick() -> PullConfig {
    PullConfig {
        timeouts: RegistryTimeouts {
            connect: Duration::from_secs(1),
            read: Duration::from_secs(1),
            retry_window: Duration::from_secs(3),
        },
        ..PullConfig::default()
    }
}

async fn pull(
    store: &ImageStore,
    reference: &ImageRef,
) -> Result<hearth_image::ImageRecord, PullError> {
    hearth_image::pull(store, reference, &quick(), &Counter::default()).await
}

/// Files left anywhere under `dir` whose name starts with `prefix`.
fn leftovers(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(path.clone());
        }
        if path.is_dir() && !path.is_symlink() {
            found.extend(leftovers(&path, prefix));
        }
    }
    found
}

#[tokio::test]
async fn test_pull_twice_downloads_once_and_keeps_config() {
    let registry = LocalRegistry::start().unwrap();
    let image = TestImage::new(TestConfig {
        cmd: vec!["/bin/sh".into()],
        env: vec!["A=1".into()],
        user: Some("1000:1000".into()),
        ..TestConfig::default()
    })
    .layer(&busybox_entries().unwrap(), Compression::Gzip)
    .unwrap()
    .layer(&[Entry::file("etc/motd", "hi")], Compression::Zstd)
    .unwrap();
    let manifest = push(&registry, &image, "cache");
    let s = store();
    let first = Counter::default();
    let reference = reference(&registry, "cache");
    let record = hearth_image::pull(&s.store, &reference, &PullConfig::default(), &first)
        .await
        .unwrap();
    assert_eq!(record.digest.to_string(), manifest);
    assert_eq!(record.config.env, ["A=1"]);
    assert_eq!(record.config.user.as_deref(), Some("1000:1000"));
    assert!(hearth_image::base_files(&s.store.rootfs(&record.digest))
        .unwrap()
        .iter()
        .all(|layer| layer.is_file()));
    assert_eq!(first.downloads.load(Ordering::SeqCst), 2);

    let second = Counter::default();
    hearth_image::pull(&s.store, &reference, &PullConfig::default(), &second)
        .await
        .unwrap();
    assert_eq!(second.downloads.load(Ordering::SeqCst), 0);
    assert_eq!(
        s.store.resolve(&reference.to_string()).unwrap(),
        record.digest
    );
    assert!(leftovers(s.dir.path(), ".partial").is_empty());
    assert!(leftovers(s.dir.path(), ".building").is_empty());
}

#[tokio::test]
async fn test_pull_unknown_tag_is_not_found_with_the_registry_message() {
    let registry = LocalRegistry::start().unwrap();
    let s = store();
    let err = pull(&s.store, &reference(&registry, "nothing-here"))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(
        chain.contains("was not found in its registry: manifest unknown"),
        "the registry's own words: {chain}"
    );
    assert!(!chain.contains('{'), "no raw JSON envelope: {chain}");
}

#[tokio::test]
async fn test_pull_blob_with_wrong_digest_fails_and_caches_nothing() {
    let registry = LocalRegistry::start().unwrap();
    let image = TestImage::new(TestConfig::default())
        .layer(&[Entry::file("a", "the real content")], Compression::Gzip)
        .unwrap();
    push(&registry, &image, "tampered");
    // Replace every layer blob in the registry's storage with other bytes of the same size.
    let layer = image_layer_digest(&registry, "tampered");
    let stored = registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[..2])
        .join(&layer)
        .join("data");
    let len = std::fs::metadata(&stored).unwrap().len() as usize;
    std::fs::write(&stored, vec![b'x'; len]).unwrap();
    let s = store();
    let err = pull(&s.store, &reference(&registry, "tampered"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::Blob { source, attempts, .. }
            if matches!(**source, BlobFetchError::Registry(_) | BlobFetchError::Verify(_))
                && attempts.count == 1),
        "a digest mismatch is not retried: {err:?}"
    );
    assert!(s.store.list().unwrap().is_empty());
    let cached = s.store.blobs().list().unwrap();
    assert!(cached.iter().all(|d| d.hex() != layer), "{cached:?}");
    assert!(leftovers(s.dir.path(), ".partial").is_empty());
}

#[tokio::test]
async fn test_pull_other_architecture_is_refused_naming_what_there_is() {
    let registry = LocalRegistry::start().unwrap();
    let image = TestImage::new(TestConfig {
        architecture: Some("arm64".into()),
        ..TestConfig::default()
    })
    .layer(&[Entry::file("a", "1")], Compression::Gzip)
    .unwrap();
    let s = store();

    // A bare manifest whose config says arm64.
    push(&registry, &image, "arm");
    let err = pull(&s.store, &reference(&registry, "arm"))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NoPlatform { .. }), "{err:?}");
    assert!(err.to_string().contains("linux/amd64"), "{err}");

    // An index listing only linux/arm64: refused before any blob is fetched.
    let layout = tempfile::tempdir().unwrap();
    image
        .write_index_layout(layout.path(), "1", "linux", "arm64")
        .unwrap();
    registry.push_layout(layout.path(), "1", "armonly").unwrap();
    let s = store();
    let err = pull(&s.store, &reference(&registry, "armonly"))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NoPlatform { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("has no linux/amd64 image, only linux/arm64"),
        "{err}"
    );
    assert!(s.store.blobs().list().unwrap().is_empty());
}

#[tokio::test]
async fn test_pull_escaping_layers_are_refused_and_leave_nothing() {
    let registry = LocalRegistry::start().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let outside_path = outside.path().to_str().unwrap().to_owned();
    let hostile: [(&str, Vec<Entry>); 3] = [
        ("dotdot", vec![Entry::file("../../../../escaped", "x")]),
        (
            "symlink",
            vec![
                Entry::symlink("out", &outside_path),
                Entry::file("out/escaped", "x"),
            ],
        ),
        (
            "hardlink",
            vec![Entry::hard_link("h", "../../../../etc/passwd")],
        ),
    ];
    let s = store();
    for (repo, entries) in hostile {
        let image = TestImage::new(TestConfig::default())
            .layer(&entries, Compression::Gzip)
            .unwrap();
        push(&registry, &image, repo);
        let err = pull(&s.store, &reference(&registry, repo))
            .await
            .unwrap_err();
        let PullError::Store(StoreError::Layer { source, .. }) = &err else {
            panic!("{repo}: {err:?}");
        };
        assert!(
            matches!(
                source,
                LayerError::Escapes { .. }
                    | LayerError::ThroughSymlink { .. }
                    | LayerError::LinkTarget { .. }
            ),
            "{repo}: {source:?}"
        );
    }
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    assert!(s.store.list().unwrap().is_empty());
    assert!(leftovers(s.dir.path(), ".building").is_empty());
}

#[tokio::test]
async fn test_pull_download_cut_short_is_retried_then_fails_and_caches_nothing() {
    let registry = LocalRegistry::start().unwrap();
    let image = one_file_image("big", incompressible(256 << 10));
    push(&registry, &image, "cut");
    let layer = format!("sha256:{}", image_layer_digest(&registry, "cut"));
    let via =
        |proxy: &CuttingProxy| -> ImageRef { format!("{}/cut:1", proxy.host()).parse().unwrap() };

    // Cut once: the second attempt gets the whole blob.
    let once = CuttingProxy::start(&registry.host(), &layer, 1).unwrap();
    let s = store();
    let record = pull(&s.store, &via(&once)).await.unwrap();
    assert_eq!(once.cuts_made(), 1);
    assert!(hearth_image::base_files(&s.store.rootfs(&record.digest))
        .unwrap()
        .iter()
        .all(|layer| layer.is_file()));

    // Cut every time: retried over the window, then a failure naming the blob and registry.
    let always = CuttingProxy::start(&registry.host(), &layer, usize::MAX).unwrap();
    let s = store();
    let err = pull(&s.store, &via(&always)).await.unwrap_err();
    let PullError::Blob { attempts, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(attempts.count >= 3, "{attempts:?}");
    assert_eq!(always.cuts_made(), attempts.count as usize);
    assert!(err.to_string().contains(&layer), "{err}");
    assert!(err.to_string().contains(&always.host()), "{err}");
    // Nothing half-written, nothing under the blob's digest, no image.
    assert!(leftovers(s.dir.path(), ".partial").is_empty());
    let cached = s.store.blobs().list().unwrap();
    assert!(cached.iter().all(|d| d.to_string() != layer), "{cached:?}");
    assert!(s.store.list().unwrap().is_empty());

    // The same store pulls fine once the registry is healthy.
    pull(&s.store, &reference(&registry, "cut")).await.unwrap();
}

#[tokio::test]
async fn test_pull_out_of_space_fails_clearly_and_leaves_the_store_usable() {
    let registry = LocalRegistry::start().unwrap();
    // 8 MiB: room for a small image, not for a 12 MB blob nor for 32 MB unpacked.
    let disk = SmallTmpfs::mount(8 << 20).unwrap();
    let s = store_in(disk.path());
    let big_blob = one_file_image("big", incompressible(12 << 20));
    push(&registry, &big_blob, "bigblob");
    // Zeros: a tiny download that does not fit once unpacked.
    let big_tree = one_file_image("zeros", vec![0; 32 << 20]);
    push(&registry, &big_tree, "bigtree");

    for repo in ["bigblob", "bigtree"] {
        let err = pull(&s.store, &reference(&registry, repo))
            .await
            .unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("no space left in"), "{repo}: {chain}");
        assert!(leftovers(s.dir.path(), ".partial").is_empty(), "{repo}");
        assert!(leftovers(s.dir.path(), ".building").is_empty(), "{repo}");
        assert!(s.store.list().unwrap().is_empty(), "{repo}");
    }

    let small = TestImage::new(TestConfig::default())
        .layer(&[Entry::file("etc/motd", "hi")], Compression::Gzip)
        .unwrap();
    push(&registry, &small, "small");
    let record = pull(&s.store, &reference(&registry, "small"))
        .await
        .unwrap();
    assert!(hearth_image::base_files(&s.store.rootfs(&record.digest))
        .unwrap()
        .iter()
        .all(|layer| layer.is_file()));
}

#[tokio::test]
async fn test_pull_layer_whose_diff_id_differs_is_refused_naming_both_digests() {
    let registry = LocalRegistry::start().unwrap();
    let image = TestImage::new(TestConfig::default())
        .layer(&[Entry::file("a", "1")], Compression::Gzip)
        .unwrap()
        .layer(&[Entry::file("b", "2")], Compression::Zstd)
        .unwrap()
        .wrong_last_diff_id();
    push(&registry, &image, "diffid");
    let s = store();
    let err = pull(&s.store, &reference(&registry, "diffid"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PullError::Store(StoreError::DiffIdMismatch { .. })),
        "{err:?}"
    );
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains("rootfs.diff_ids says sha256:"), "{chain}");
    assert!(s.store.list().unwrap().is_empty());
    assert!(leftovers(s.dir.path(), ".building").is_empty());
}

#[tokio::test]
async fn test_pull_layer_expanding_past_the_limit_stops_early_and_leaves_nothing() {
    let registry = LocalRegistry::start().unwrap();
    // 64 MiB of zeros gzip to about 64 KiB: a small bomb against a 4 MiB limit.
    let bomb = one_file_image("zeros", vec![0; 64 << 20]);
    push(&registry, &bomb, "bomb");
    let s = store();
    let limited = s.store.clone().with_max_unpacked_bytes(4 << 20);
    let err = pull(&limited, &reference(&registry, "bomb"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PullError::Store(StoreError::TooBig { limit, .. }) if limit == 4 << 20),
        "{err:?}"
    );
    assert!(err.to_string().contains("failed to store"), "{err}");
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(
        chain.contains("unpacks to more than 4194304 bytes"),
        "{chain}"
    );
    assert!(leftovers(s.dir.path(), ".building").is_empty());
    assert!(limited.list().unwrap().is_empty());
    // Within the default limit the same image builds.
    pull(&s.store, &reference(&registry, "bomb")).await.unwrap();
}

/// Pauses the registry (SIGSTOP) when the first bytes of a layer arrive.
struct PauseOnFirstBytes<'a> {
    registry: &'a LocalRegistry,
    paused: std::sync::atomic::AtomicBool,
}

impl PullReporter for PauseOnFirstBytes<'_> {
    fn on_layer_start(&self, _: &Digest, _: u64) {}
    fn on_layer_cached(&self, _: &Digest, _: u64) {}
    fn on_layer_progress(&self, _: &Digest, _: u64) {
        if !self.paused.swap(true, Ordering::SeqCst) {
            self.registry.pause().unwrap();
        }
    }
    fn on_layer_done(&self, _: &Digest) {}
    fn on_build(&self, _: &Digest) {}
}

#[tokio::test]
async fn test_pull_from_a_registry_paused_mid_blob_times_out_naming_it() {
    let registry = LocalRegistry::start().unwrap();
    // Far more than the socket buffers hold, so most of it is still to come when it stops;
    // zstd: gzip of this much is slow in a debug build.
    let image = TestImage::new(TestConfig::default())
        .layer(
            &[Entry::File(
                "big".into(),
                incompressible(32 << 20),
                0o644,
                0,
                0,
            )],
            Compression::Zstd,
        )
        .unwrap();
    push(&registry, &image, "paused");
    let s = store();
    let reporter = PauseOnFirstBytes {
        registry: &registry,
        paused: false.into(),
    };
    let started = Instant::now();
    let err = hearth_image::pull(
        &s.store,
        &reference(&registry, "paused"),
        &quick(),
        &reporter,
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    registry.resume().unwrap();
    assert!(
        matches!(&err, PullError::Blob { source, .. }
            if matches!(**source, BlobFetchError::Timeout { .. })),
        "{err:?}"
    );
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(chain.contains(&registry.host()), "{chain}");
    assert!(
        chain.contains("sent nothing for 1 s (read timeout)"),
        "{chain}"
    );
    // The 3 s window plus the last attempt's 1 s timeout, and some slack for a busy machine.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(leftovers(s.dir.path(), ".partial").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pull_rides_out_a_registry_restart() {
    let mut registry = LocalRegistry::start().unwrap();
    let image = one_file_image("f", b"restarted".to_vec());
    push(&registry, &image, "restart");
    registry.stop().unwrap();
    let s = store();
    let config = PullConfig {
        timeouts: RegistryTimeouts {
            retry_window: Duration::from_secs(20),
            ..quick().timeouts
        },
        ..PullConfig::default()
    };
    let reference = reference(&registry, "restart");
    let counter = Counter::default();
    let pulling = hearth_image::pull(&s.store, &reference, &config, &counter);
    // Down for two seconds while the pull keeps trying, then back.
    let restart = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::block_in_place(|| registry.start_again()).unwrap();
    };
    let (record, ()) = tokio::join!(pulling, restart);
    let record = record.unwrap();
    assert!(hearth_image::base_files(&s.store.rootfs(&record.digest))
        .unwrap()
        .iter()
        .all(|layer| layer.is_file()));
}

/// The tree inside a stored one-layer image's erofs base, extracted with `fsck.erofs`.
fn extract(store: &ImageStore, digest: &Digest) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let layers = hearth_image::base_files(&store.rootfs(digest)).unwrap();
    assert_eq!(layers.len(), 1, "{layers:?}");
    let output = std::process::Command::new("fsck.erofs")
        .arg(format!("--extract={}", dir.path().join("tree").display()))
        .arg(&layers[0])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    dir
}

#[tokio::test]
async fn test_pull_layers_written_by_python_tarfile_apply_every_entry_type() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    let registry = LocalRegistry::start().unwrap();
    let s = store();
    for (repo, format) in [("pax", "PAX_FORMAT"), ("gnu", "GNU_FORMAT")] {
        let (tar, long_dir) = python_tar(format).unwrap();
        let image = TestImage::new(TestConfig::default())
            .tar_layer(&tar, Compression::Gzip)
            .unwrap();
        push(&registry, &image, repo);
        let record = pull(&s.store, &reference(&registry, repo))
            .await
            .unwrap_or_else(|e| panic!("{format}: {:?}", anyhow::Error::from(e)));
        let extracted = extract(&s.store, &record.digest);
        let tree = extracted.path().join("tree");
        let meta = |path: &str| std::fs::symlink_metadata(tree.join(path)).unwrap();
        let long_file = format!("{long_dir}/file-with-a-long-name");
        assert_eq!(std::fs::read(tree.join(&long_file)).unwrap(), b"long\n");
        // fsck.erofs extracts hard links as copies; the link resolved to the long-named file.
        assert_eq!(std::fs::read(tree.join("usr/linked")).unwrap(), b"long\n");
        assert_eq!(
            std::fs::read_link(tree.join("usr/to-long")).unwrap(),
            Path::new(&long_file)
        );
        assert!(meta("run/fifo").file_type().is_fifo(), "{format}");
        assert_eq!(meta("run/fifo").mode() & 0o7777, 0o620, "{format}");
        assert!(meta("dev/null").file_type().is_char_device(), "{format}");
        assert_eq!(meta("dev/null").rdev(), nix::sys::stat::makedev(1, 3));
        assert!(meta("dev/loop0").file_type().is_block_device(), "{format}");
        assert_eq!(meta("dev/loop0").rdev(), nix::sys::stat::makedev(7, 0));
        // Directory mtimes survive their children being written.
        assert_eq!(meta(long_dir).mtime(), 1_600_000_000, "{format}");
        assert_eq!(meta("dev").mtime(), 1_600_000_000, "{format}");
    }
}

/// The single layer's digest hex of `repo:1`, read from the registry's own storage.
fn image_layer_digest(registry: &LocalRegistry, repo: &str) -> String {
    let layers = registry
        .storage()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_layers/sha256");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(layers).unwrap().flatten() {
        let hex = entry.file_name().to_string_lossy().into_owned();
        let blob = registry
            .storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data");
        // The config is JSON; the layer is gzip.
        if std::fs::read(blob).unwrap().starts_with(&[0x1f, 0x8b]) {
            found.push(hex);
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}
