//! `hearth doctor` on this host: what it finds and what it says is missing.

use crate::{code, host, stdout, HEARTH};

#[test]
fn test_doctor_reports_accelerator_and_assets() {
    let host = host();
    let output = host.hearth().args(["doctor", "--json"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stdout(&output));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    // Whatever this host is, the accelerator is kvm only for hardware KVM.
    let accel = report["accel"].as_str().unwrap();
    let kvm = report["kvm"].as_str().unwrap();
    assert_eq!(accel == "kvm", kvm == "hardware", "{report}");
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!((kvm, accel), ("pvm", "tcg"));
        assert!(report["accel_reason"].as_str().unwrap().contains("kvm_pvm"));
    }
    let checks = report["checks"].as_array().unwrap();
    for name in ["qemu", "kernel", "initramfs", "default-image"] {
        let check = checks.iter().find(|c| c["name"] == name).unwrap();
        assert_eq!(check["status"], "ok", "{check}");
    }
    // The agent's stream is a virtio-serial port: no vsock helper is needed any more.
    assert!(
        checks.iter().all(|c| c["name"] != "vhost-device-vsock"),
        "{report}"
    );
}

#[test]
fn test_doctor_on_an_empty_state_dir_says_to_run_setup() {
    let empty = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(HEARTH)
        .env("HEARTH_STATE_DIR", empty.path())
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(code(&output), 1);
    let text = stdout(&output);
    assert!(text.contains("MISSING kernel"), "{text}");
    assert!(text.contains("fix: run `hearth setup`"), "{text}");
    assert!(text.contains("cannot run VMs here"), "{text}");
}
