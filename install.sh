#!/usr/bin/env bash
# Installs hearth and everything it needs on Debian 12 (as root), then runs a first sandbox.
# Safe to re-run: each step is skipped or fast when already done.
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "install.sh must run as root (it installs Debian packages and /usr/local files)" >&2
    exit 1
fi
if ! command -v cargo >/dev/null; then
    echo "cargo not found: hearth is built from source with Rust >= 1.85 (rustup toolchain)" >&2
    exit 1
fi

packages=(qemu-system-x86 linux-image-cloud-amd64 busybox-static e2fsprogs cpio file
    pkg-config libnftnl-dev libmnl-dev docker-registry skopeo umoci apache2-utils openssl
    erofs-utils nftables python3 python3-venv)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The SDK tests run the E2B JS SDK (fetch and ESM need Node >= 18; Debian 12 ships 18). A
# Node already on the PATH is kept.
command -v npm >/dev/null || missing+=(nodejs npm)
# The volume tests commit with the host's git inside a guest.
command -v git >/dev/null || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
    step "Installing Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

step "Building hearth"
cargo build --quiet --release -p hearth
step "Building the static guest agent"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release -p hearth-agent \
    --target x86_64-unknown-linux-gnu --target-dir target/agent
install -D -m 0755 target/release/hearth "$PREFIX/bin/hearth"
install -D -m 0755 target/agent/x86_64-unknown-linux-gnu/release/hearth-agent \
    "$PREFIX/lib/hearth/hearth-agent"

step "Building boot assets (hearth setup)"
"$PREFIX/bin/hearth" setup --agent "$PREFIX/lib/hearth/hearth-agent"

step "Running a first sandbox: hearth run -- uname -a"
"$PREFIX/bin/hearth" run -- uname -a
