//! hearth-test-support
