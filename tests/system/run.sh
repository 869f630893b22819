#!/usr/bin/env bash
# The qemu A/B system test of issue #9 (`make test-system`).
#
# Builds images 1.0.0, 2.0.0 and 3.0.0 from one cached Debian base (3.0.0's configuration
# makes its health check fail), serves a TUF repository published with `passerelle vendor`
# from the host's loopback (the guest reaches it at 10.0.2.2), boots 1.0.0 under qemu (TCG,
# OVMF, systemd-boot) and follows the serial console:
#   1. 1.0.0 finds 2.0.0, installs it into slot b, reboots; 2.0.0 commits after /healthz;
#   2. 3.0.0 is published; power is cut (qemu killed) while 2.0.0 copies it into slot a;
#      the box boots 2.0.0 again by itself;
#   3. it installs 3.0.0 again, reboots into it; 3.0.0 is not healthy, asks for a reboot, the
#      boot counter runs out and systemd-boot starts 2.0.0, which reports the fallback and
#      never installs 3.0.0 again.
# Bad inputs on the way: a torn boot entry for slot b is on the ESP from the start (1.0.0
# boots, removes it and updates); a second box whose data partition cannot stage the image
# refuses the update with its slot untouched and keeps running 1.0.0; at the end a factory
# reset wipes the data partition.
# Every wait polls the serial log with a deadline; any miss fails with the log's tail.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin_src=${PASSERELLE_BIN:-target/release/passerelle}
board=qemu-x86_64
work=target/firmware/system-test
t0=$(date +%s)
qemu_pid=
http_pid=
serial=

say() { echo "system-test [$(($(date +%s) - t0))s] $*" >&2; }
plain() { sed 's/\x1b\[[0-9;=?]*[A-Za-z]//g' "$@"; }
fail() {
  say "FAIL: $*"
  if [ -n "$serial" ] && [ -f "$serial" ]; then
    echo "----- last 80 lines of $serial" >&2
    plain "$serial" | tail -n 80 >&2
  fi
  exit 1
}
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
  [ -n "$http_pid" ] && kill "$http_pid" 2>/dev/null || true
}
trap cleanup EXIT
trap "exit 1" TERM INT

# wait_for REGEX COUNT TIMEOUT_S WHAT: until the serial log holds COUNT lines matching REGEX.
wait_for() {
  local re=$1 count=$2 timeout=$3 what=$4 deadline=$(($(date +%s) + $3)) n
  while :; do
    n=$(plain "$serial" 2>/dev/null | grep -cE "$re" || true)
    [ "$n" -ge "$count" ] && { say "ok: $what"; return 0; }
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: no '$re' (x$count) within ${timeout}s"
    kill -0 "$qemu_pid" 2>/dev/null || fail "$what: qemu exited"
    sleep 0.5
  done
}

boot() { # boot SERIAL_LOG [DISK]: starts qemu on the test disk
  serial=$1
  local disk=${2:-$work/disk.img}
  qemu-system-x86_64 -accel tcg -m 1024 -smp 2 -nographic -no-user-config -nodefaults \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file="$work/vars.fd" \
    -drive file="$disk",format=raw,if=virtio,cache=unsafe \
    -nic user,model=virtio-net-pci -serial file:"$serial" -monitor none \
    >"$serial.qemu" 2>&1 &
  qemu_pid=$!
  say "qemu started (pid $qemu_pid), console in $serial"
}

[ -x "$bin_src" ] || fail "$bin_src missing: cargo build --release -p passerelle"
rm -rf "$work"
mkdir -p "$work"
# An own copy: other builds may replace target/release while this runs.
cp "$bin_src" "$work/passerelle"
bin=$work/passerelle
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# Vendor side: development keys, root of trust (shipped in every image).
vendor=$work/vendor
mkdir -p "$vendor"
"$bin" vendor keygen "$vendor/root.dev-only.pk8" >/dev/null
"$bin" vendor keygen "$vendor/online.dev-only.pk8" >/dev/null
"$bin" vendor init-root --repo "$vendor/repo" --root-key "$vendor/root.dev-only.pk8" \
  --online-key "$vendor/online.dev-only.pk8" >/dev/null
mkdir -p "$vendor/repo/targets"
publish() {
  "$bin" vendor publish --repo "$vendor/repo" --image "$work/out/passerelle-$board-$1.img" \
    --board "$board" --version "$1" --online-key "$vendor/online.dev-only.pk8" >/dev/null
  rm "$work/out/passerelle-$board-$1.img"
  say "published $1"
}

cat >"$work/healthy.toml" <<TOML
[general]
profile = "practice"
data_dir = "/var/lib/passerelle"

[updater]
vendor_url = "@VENDOR_URL@"
board = "@BOARD@"
interval_secs = 3
jitter_secs = 0
boot_tries = 1
reboot = "immediately"
health_deadline_secs = 60
TOML
# 3.0.0: its health check never answers (nothing listens there), like a release whose
# services do not come up.
{ cat "$work/healthy.toml"; echo 'health_url = "http://127.0.0.1:9/healthz"'; } >"$work/unhealthy.toml"

build() { # build VERSION CONFIG [ROOT_ONLY]
  local s=$(date +%s)
  DATA_MB=${DATA_MB:-512} ROOT_ONLY=${3:-0} PASSERELLE_BIN=$bin FIRMWARE_CONFIG=$2 VENDOR_URL="http://10.0.2.2:$port/" \
    TUF_ROOT="$vendor/repo/metadata/1.root.json" \
    firmware/build-image.sh "$board" "$1" "$work/out" 2>"$work/build-$1.log" \
    || { cat "$work/build-$1.log" >&2; fail "building $1"; }
  say "built $1 in $(($(date +%s) - s))s"
}
build 1.0.0 "$work/healthy.toml"
rm "$work/out/passerelle-$board-1.0.0.img"
mv "$work/out/passerelle-$board-1.0.0.disk" "$work/disk.img"
DATA_MB=160 build 1.0.0 "$work/healthy.toml"
rm "$work/out/passerelle-$board-1.0.0.img"
mv "$work/out/passerelle-$board-1.0.0.disk" "$work/small-data.img"
build 2.0.0 "$work/healthy.toml" 1
build 3.0.0 "$work/unhealthy.toml" 1
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"
# A torn entry for slot b (a half-written file with an unparseable counter): systemd-boot
# skips it (no kernel line), the updater must not choke on it.
printf 'title Passerelle 9.9.9 (slot b)\nversion 9.9' >"$work/torn.conf"
mcopy -i "$work/disk.img@@1M" "$work/torn.conf" ::/loader/entries/passerelle-b+x-y.conf

publish 2.0.0
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$vendor/repo" >"$work/http.log" 2>&1 &
http_pid=$!
deadline=$(($(date +%s) + 20))
until curl -fs -o /dev/null "http://127.0.0.1:$port/metadata/1.root.json" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "vendor HTTP server not up"
  sleep 0.2
done

# 0. Data partition too small to stage the image: refused, slot b untouched, no reboot.
b0=$(date +%s)
boot "$work/serial-0.log" "$work/small-data.img"
wait_for 'updater: running image.*"a".*version.*1\.0\.0' 1 240 "1.0.0 boots from slot a (small data partition)"
say "first boot to the daemon: $(($(date +%s) - b0))s"
wait_for 'update rejected, nothing armed.*No space left on device' 1 180 "a full data partition refuses the update"
if plain "$serial" | grep -qE 'armed one-shot boot|copying the verified image'; then fail "the update went on with a full data partition"; fi
kill "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
python3 - "$work/small-data.img" <<'PY' || fail "slot b of the small-data box was written"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek((1 + 128 + 768) << 20)  # root-b
    left = 768 << 20
    while left:
        chunk = f.read(min(left, 16 << 20))
        if chunk.count(0) != len(chunk):
            sys.exit(1)
        left -= len(chunk)
PY
say "ok: slot b of the small-data box is still all zeroes"
rm "$work/small-data.img"

# 1. 1.0.0 → 2.0.0, committed after /healthz; the torn entry is removed on the way.
boot "$work/serial-1.log"
wait_for 'updater: running image.*"a".*version.*1\.0\.0' 1 240 "1.0.0 boots from slot a"
wait_for "inactive slot's boot entry unreadable: removed" 1 60 "the torn slot b entry is removed"
wait_for 'armed one-shot boot.*"b".*2\.0\.0' 1 300 "2.0.0 written into slot b and armed"
wait_for 'updater: running image.*"b".*version.*2\.0\.0' 1 240 "2.0.0 boots from slot b"
wait_for 'updater: boot committed.*"b".*2\.0\.0' 1 120 "2.0.0 committed after /healthz"

# 2. Power cut while 3.0.0 is copied into slot a.
publish 3.0.0
wait_for 'copying the verified image into the slot' 2 300 "3.0.0 verified, copy into slot a started"
kill -9 "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
say "power cut during the slot copy"
boot "$work/serial-2.log"
wait_for 'updater: running image.*"b".*version.*2\.0\.0' 1 240 "after the power cut the box boots 2.0.0 by itself"
if plain "$serial" | grep -qE 'running image.*"a"'; then fail "slot a booted after the power cut"; fi

# 3. 3.0.0 installed again, not healthy: back on 2.0.0 by itself, 3.0.0 never retried.
wait_for 'armed one-shot boot.*"a".*3\.0\.0' 1 300 "3.0.0 written into slot a and armed"
wait_for 'updater: running image.*"a".*version.*3\.0\.0' 1 240 "3.0.0 boots from slot a"
wait_for 'boot on trial not healthy' 1 120 "3.0.0's health check fails"
wait_for 'updater: running image.*"b".*version.*2\.0\.0' 2 240 "the box is back on 2.0.0"
wait_for 'armed slot never became healthy: fell back' 1 60 "2.0.0 reports the fallback from 3.0.0"
wait_for 'skipping a release that failed its boot here.*3\.0\.0' 1 60 "3.0.0 is not installed again"
if plain "$serial" | grep -qE 'boot committed.*"a"'; then fail "3.0.0 was committed"; fi

# 4. Factory reset: the flag passerelle-factory-reset leaves on the ESP (set here from the
# host, box off) makes the next boot recreate the data partition before anything mounts it.
# Proof: the flag is consumed and the box has forgotten that 3.0.0 failed (so it fetches it).
kill "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
: >"$work/factory-reset"
mmd -i "$work/disk.img@@1M" ::/passerelle 2>/dev/null || true
mcopy -i "$work/disk.img@@1M" "$work/factory-reset" ::/passerelle/factory-reset
boot "$work/serial-4.log"
wait_for 'updater: running image.*"b".*version.*2\.0\.0' 1 240 "2.0.0 boots after the factory reset"
wait_for 'downloading into the inactive slot.*3\.0\.0' 1 120 "the wiped box no longer remembers 3.0.0's failure"
kill "$qemu_pid"
wait "$qemu_pid" 2>/dev/null || true
if mdir -b -i "$work/disk.img@@1M" ::/passerelle | grep -q factory-reset; then
  fail "the factory reset flag was not consumed"
fi
say "ok: factory reset wiped the data partition"
say "PASS in $(($(date +%s) - t0))s"
