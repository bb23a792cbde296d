//! OCI images end to end: images built here, pushed to a real registry on 127.0.0.1, pulled and
//! booted by `hearth run`, checked from inside the guest.

use hearth_test_support::oci_layout::{
    busybox_entries, incompressible, Compression, Entry, TestConfig, TestImage,
};
use hearth_test_support::registry::LocalRegistry;

use crate::{code, host, stderr, stdout};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\n";

/// What the image's default process prints: the guest's view of everything the layers and the
/// config should have produced, one fact per line.
const REPORT: &str = "id -u; id -g; pwd; echo \"$GREETING\"; echo \"$HOME\"; \
    ls /opq | sort | tr '\\n' ' '; echo; \
    test -e /etc/removed && echo removed-present || echo removed-gone; \
    test -e /gone-dir && echo dir-present || echo dir-gone; \
    stat -c '%h %i' /data/keep; stat -c '%i' /data/link; \
    stat -c '%u:%g %a' /home/app/secret; cat /data/keep";

/// Two layers over a busybox base layer: the second whites out a file and a directory, makes a
/// directory opaque, adds a hard link and a private file, and is zstd-compressed.
fn test_image() -> TestImage {
    let mut base = busybox_entries().unwrap();
    base.extend([
        Entry::dir("etc"),
        Entry::file("etc/passwd", PASSWD),
        Entry::file("etc/group", GROUP),
        Entry::file("etc/removed", "lower"),
        Entry::dir("gone-dir"),
        Entry::file("gone-dir/x", "lower"),
        Entry::dir("opq"),
        Entry::file("opq/lower", "lower"),
        Entry::dir("data"),
        Entry::file("data/keep", "kept\n"),
        Entry::Dir("home".into(), 0o755),
    ]);
    let upper = [
        Entry::whiteout("etc/removed"),
        Entry::whiteout("gone-dir"),
        Entry::dir("opq"),
        Entry::opaque("opq"),
        Entry::file("opq/upper", "upper"),
        Entry::hard_link("data/link", "data/keep"),
        Entry::Dir("home/app".into(), 0o755),
        Entry::File("home/app/secret".into(), b"s".to_vec(), 0o600, 1000, 1000),
    ];
    TestImage::new(TestConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec![REPORT.into()],
        env: vec!["GREETING=hello from the image".into()],
        working_dir: Some("/home/app".into()),
        user: Some("app".into()),
        ..TestConfig::default()
    })
    .layer(&base, Compression::Gzip)
    .unwrap()
    .layer(&upper, Compression::Zstd)
    .unwrap()
}

/// `hearth image ls --json`.
fn image_list(host: &hearth_test_support::host::TestHost) -> serde_json::Value {
    let output = host
        .hearth()
        .args(["image", "ls", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn test_run_registry_image_sees_merged_tree_and_config() {
    let registry = LocalRegistry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    test_image().write_layout(layout.path(), "1").unwrap();
    registry.push_layout(layout.path(), "1", "test").unwrap();
    let image = format!("{}/test:1", registry.host());
    let host = host();

    // No command: the image's Entrypoint + Cmd, as its User, in its WorkingDir, with its Env.
    let output = host.hearth().args(["run", &image]).output().unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..5],
        [
            "1000",
            "1000",
            "/home/app",
            "hello from the image",
            "/home/app"
        ]
    );
    assert_eq!(lines[5].trim(), "upper");
    assert_eq!(lines[6..8], ["removed-gone", "dir-gone"]);
    let (links, keep_inode) = lines[8].split_once(' ').unwrap();
    assert_eq!(links, "2");
    assert_eq!(lines[9], keep_inode, "the hard link shares the inode");
    assert_eq!(lines[10], "1000:1000 600");
    assert_eq!(lines[11], "kept");

    // The first start made this machine's template: a warm start runs the image's default
    // command exactly as the cold one did, and so does `--cold`.
    for flags in [&[][..], &["--cold"][..]] {
        let again = host
            .hearth()
            .arg("run")
            .args(flags)
            .arg(&image)
            .output()
            .unwrap();
        assert_eq!(code(&again), 0, "stderr: {}", stderr(&again));
        assert_eq!(stdout(&again), text, "run {flags:?}");
    }
    let templates = host
        .hearth()
        .args(["template", "ls", "--json"])
        .output()
        .unwrap();
    let templates: serde_json::Value = serde_json::from_slice(&templates.stdout).unwrap();
    assert_eq!(templates[0]["image"], image.as_str(), "{templates}");

    // Flags over the config: entrypoint, user, env, and trailing args as the command. The image
    // is local now, so nothing is pulled: the registry can be gone.
    drop(registry);
    let output = host
        .hearth()
        .args([
            "run",
            "-u",
            "0",
            "-e",
            "GREETING=bye",
            "--entrypoint",
            "/bin/sh",
        ])
        .args([
            &image,
            "--",
            "-c",
            "id -u; echo $GREETING; pwd; test -d /sys/fs/erofs/vda && echo erofs",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    // The last line: the base under the overlay is the erofs image (the kernel lists each
    // mounted erofs device in sysfs).
    assert_eq!(stdout(&output), "0\nbye\n/home/app\nerofs\n");

    // Listed, removed, pruned.
    let list = image_list(&host);
    assert_eq!(list[0]["names"][0], image.as_str());
    assert_eq!(list[0]["config"]["user"], "app");
    let output = host
        .hearth()
        .args(["image", "rm", &image])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let output = host
        .hearth()
        .args(["image", "prune", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["blobs"].as_array().unwrap().len(), 3, "{report}");
    host.assert_clean();
}

#[test]
fn test_pull_bad_references_and_missing_images_fail_clearly() {
    let registry = LocalRegistry::start().unwrap();
    let host = host();
    let output = host.hearth().args(["pull", "Not/Valid"]).output().unwrap();
    assert_eq!(code(&output), 1, "hearth pull fails with 1, as docker pull");
    assert!(
        stderr(&output).contains("is not a valid image reference"),
        "{}",
        stderr(&output)
    );

    let missing = format!("{}/absent:1", registry.host());
    let output = host.hearth().args(["pull", &missing]).output().unwrap();
    assert_eq!(code(&output), 1);
    assert!(
        stderr(&output).contains("was not found"),
        "{}",
        stderr(&output)
    );

    let output = host
        .hearth()
        .args(["run", &missing, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 125, "hearth's own failure in run");
}

#[test]
fn test_image_import_names_and_lists_the_image() {
    let layout = tempfile::tempdir().unwrap();
    let digest = TestImage::new(TestConfig::default())
        .layer(&[Entry::file("etc/motd", "hi")], Compression::Gzip)
        .unwrap()
        .write_layout(layout.path(), "1")
        .unwrap();
    let host = host();
    let output = host
        .hearth()
        .args(["image", "import", "--name", "imported:1"])
        .arg(layout.path())
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output).trim(), digest);
    let output = host.hearth().args(["image", "ls"]).output().unwrap();
    assert!(
        stdout(&output).contains("docker.io/library/imported:1"),
        "{}",
        stdout(&output)
    );

    // `image` commands fail with 1, as docker's do.
    let output = host
        .hearth()
        .args(["image", "rm", "absent:1"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    assert!(stderr(&output).contains("no image"), "{}", stderr(&output));
    let output = host
        .hearth()
        .args(["image", "import", "/nonexistent/layout"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
}

#[test]
fn test_pull_progress_bars_on_a_terminal_lines_when_piped_only_the_digest_when_quiet() {
    let registry = LocalRegistry::start().unwrap();
    // Incompressible, so the layer is big enough to be seen arriving.
    let image = TestImage::new(TestConfig::default())
        .layer(
            &[Entry::File(
                "noise".into(),
                incompressible(2_000_000),
                0o644,
                0,
                0,
            )],
            Compression::Gzip,
        )
        .unwrap();
    let layout = tempfile::tempdir().unwrap();
    let digest = image.write_layout(layout.path(), "1").unwrap();
    registry
        .push_layout(layout.path(), "1", "progress")
        .unwrap();
    let reference = format!("{}/progress:1", registry.host());

    // A terminal: bars that end as a summary per layer, not the plain lines.
    let on_tty = host();
    let mut command = portable_pty::CommandBuilder::new(crate::HEARTH);
    command.env("HEARTH_STATE_DIR", on_tty.state_dir());
    command.env("TERM", "xterm");
    command.args(["pull", &reference]);
    let mut session = hearth_test_support::pty::PtySession::spawn(command, 30, 120).unwrap();
    assert_eq!(session.wait(std::time::Duration::from_secs(60)).unwrap(), 0);
    let screen = session.screen();
    assert!(screen.contains("done ("), "{screen}");
    assert!(!screen.contains("downloading"), "{screen}");
    assert!(
        screen.contains(&digest),
        "the digest still ends the output: {screen}"
    );

    // Piped: one line per step; a second pull downloads nothing.
    let piped = host();
    let output = piped.hearth().args(["pull", &reference]).output().unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(": downloading 2.0 MB"), "{text}");
    assert!(text.contains(": done"), "{text}");
    assert!(text.contains(": building base image"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no terminal codes in a pipe: {text:?}"
    );
    let output = piped.hearth().args(["pull", &reference]).output().unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert!(
        !stderr(&output).contains("downloading"),
        "{}",
        stderr(&output)
    );

    // Quiet: the digest and nothing else.
    let quiet = host();
    let output = quiet
        .hearth()
        .args(["pull", "-q", &reference])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(stderr(&output), "");
    assert_eq!(stdout(&output), format!("{digest}\n"));
}

#[test]
fn test_concurrent_pulls_of_one_image_share_one_cache_and_the_image_runs() {
    let registry = LocalRegistry::start().unwrap();
    let layout = tempfile::tempdir().unwrap();
    let digest = test_image().write_layout(layout.path(), "1").unwrap();
    registry.push_layout(layout.path(), "1", "twice").unwrap();
    let image = format!("{}/twice:1", registry.host());
    let host = host();

    let pulls: Vec<_> = (0..2)
        .map(|_| {
            host.hearth()
                .args(["pull", "-q", &image])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for pull in pulls {
        let output = pull.wait_with_output().unwrap();
        assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
        assert_eq!(stdout(&output), format!("{digest}\n"));
    }

    // One copy of each blob (config + two layers), nothing half-written, one image.
    let blobs: Vec<String> = std::fs::read_dir(host.state_dir().join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(blobs.len(), 3, "{blobs:?}");
    let list = image_list(&host);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["names"], serde_json::json!([image]));
    let images_dir: Vec<String> = std::fs::read_dir(host.state_dir().join("images/oci"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".building"))
        .collect();
    assert!(images_dir.is_empty(), "staging left behind: {images_dir:?}");

    let output = host
        .hearth()
        // The entrypoint is `sh -c`: the command is one string.
        .args(["run", &image, "--", "cat /data/keep"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "kept\n");
    host.assert_clean();
}

/// Bytes `dir` takes on disk, each inode counted once (as `du` counts hard links).
fn disk_used(dir: &std::path::Path) -> u64 {
    let output = std::process::Command::new("du")
        .arg("-sB1")
        .arg(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    stdout(&output)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Names in the store's shared layer pool.
fn pooled_layers(host: &hearth_test_support::host::TestHost) -> Vec<String> {
    std::fs::read_dir(host.state_dir().join("images/oci/layers"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn test_images_sharing_a_layer_store_it_once_and_the_guest_stacks_the_layers() {
    let registry = LocalRegistry::start().unwrap();
    let mut base = busybox_entries().unwrap();
    base.extend([
        Entry::dir("etc"),
        Entry::file("etc/passwd", PASSWD),
        Entry::file("etc/group", GROUP),
        Entry::file("etc/removed", "lower\n"),
        Entry::dir("opq"),
        Entry::file("opq/lower", "lower\n"),
        Entry::File("big".into(), incompressible(8 << 20), 0o644, 0, 0),
    ]);
    let config = TestConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        ..TestConfig::default()
    };
    let a = TestImage::new(config.clone())
        .layer(&base, Compression::Gzip)
        .unwrap()
        .layer(
            &[
                Entry::whiteout("etc/removed"),
                Entry::dir("opq"),
                Entry::opaque("opq"),
                Entry::file("opq/upper", "upper\n"),
                Entry::file("only-a", "a\n"),
            ],
            Compression::Zstd,
        )
        .unwrap();
    let b = TestImage::new(config)
        .layer(&base, Compression::Gzip)
        .unwrap()
        .layer(&[Entry::file("only-b", "b\n")], Compression::Gzip)
        .unwrap();
    let host = host();
    let mut names = Vec::new();
    let mut used = Vec::new();
    for (image, repo) in [(a, "shared-a"), (b, "shared-b")] {
        let layout = tempfile::tempdir().unwrap();
        image.write_layout(layout.path(), "1").unwrap();
        registry.push_layout(layout.path(), "1", repo).unwrap();
        let name = format!("{}/{repo}:1", registry.host());
        let output = host.hearth().args(["pull", "-q", &name]).output().unwrap();
        assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
        used.push(disk_used(host.state_dir()));
        names.push(name);
    }
    // Base, A's upper and B's upper, each once; the base layer's blob is shared too.
    assert_eq!(pooled_layers(&host).len(), 3, "{:?}", pooled_layers(&host));
    let ratio = used[1] as f64 / used[0] as f64;
    assert!(
        ratio <= 1.1,
        "two images sharing a base take {ratio:.2}x the disk of one ({used:?})"
    );

    // Each layer is its own erofs disk; overlayfs applies A's whiteout and opaque dir across
    // them. A second run is a warm start from the template and sees the same.
    let script = "cat /opq/*; cat /etc/removed 2>/dev/null || echo removed-gone; \
        cat /only-*; cd /sys/fs/erofs && echo vd*";
    for _ in 0..2 {
        let output = host
            .hearth()
            .args(["run", &names[0], "--", script])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
        assert_eq!(stdout(&output), "upper\nremoved-gone\na\nvda vdb\n");
    }
    let run_b = || {
        let output = host
            .hearth()
            .args(["run", &names[1], "--", script])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
        stdout(&output)
    };
    assert_eq!(run_b(), "lower\nlower\nb\nvda vdb\n");

    // Removing A keeps the layer B shares; removing B too leaves no layer.
    let output = host
        .hearth()
        .args(["image", "rm", &names[0]])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(pooled_layers(&host).len(), 2, "{:?}", pooled_layers(&host));
    assert_eq!(run_b(), "lower\nlower\nb\nvda vdb\n");
    let output = host
        .hearth()
        .args(["image", "rm", &names[1]])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(pooled_layers(&host), Vec::<String>::new());
    host.assert_clean();
}
