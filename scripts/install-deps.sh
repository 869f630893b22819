#!/usr/bin/env bash
# Installs what passerelle needs on a Debian 12 machine, only what is missing, so that
# `make run` and `make test` work on a fresh clone. Idempotent: a second run does nothing.
#   scripts/install-deps.sh run    what the daemon needs at run time
#   scripts/install-deps.sh test   that, plus the real peers and tools the tests start
#   scripts/install-deps.sh firmware  image building and the qemu system test (issue #9)
set -euo pipefail

mode=${1:-test}

run_pkgs=(ca-certificates openssl pkg-config libpcsclite-dev softhsm2 opensc pcscd)
# The real peers of the test suite (tests/harness) and the reference tools the tests and
# benchmarks compare against (openssl, xmlsec1, mbsync, swaks). See shared/design/test-infra.md.
test_pkgs=(postfix dovecot-imapd dovecot-lmtpd dovecot-pop3d slapd ldap-utils
  pcsc-tools vsmartcard-vpcd vsmartcard-vpicc swaks isync xmlsec1 sqlite3
  iputils-ping nftables iproute2 procps util-linux python3 time dnsmasq-base
  chromium chromium-driver)

# `make image` and `make test-system`: no loop devices or mounts, only these tools.
firmware_pkgs=(mmdebstrap qemu-system-x86 ovmf systemd-boot-efi erofs-utils squashfs-tools
  dosfstools mtools fdisk e2fsprogs curl python3)

pkgs=("${run_pkgs[@]}")
[ "$mode" = test ] && pkgs+=("${test_pkgs[@]}")
[ "$mode" = firmware ] && pkgs=("${firmware_pkgs[@]}")

sudo=
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  # Postfix asks how to configure itself; the tests run their own instances.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is missing; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

if [ "$mode" = test ]; then
  command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
  command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny
  # The Yocto layer is linted, not built, here (no network for layers).
  python3 -m oelint_adv --version >/dev/null 2>&1 || python3 -m pip install --quiet oelint-adv
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
fi
