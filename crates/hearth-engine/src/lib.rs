//! hearth-engine: sandbox lifecycle. Builds boot assets (`setup`), starts VMs through
//! `hearth-vmm`, and drives the guest agent over vsock.

pub mod paths;
