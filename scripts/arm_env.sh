#!/usr/bin/env bash
# An emulated aarch64 CPython 3.11 with the real LiteRT interpreter, to run tfq
# models with the aarch64 delegate on an x86-64 Linux machine (docs/arm.md).
#
#   bash scripts/arm_env.sh prepare
#       Builds (once) a private aarch64 root from Debian's arm64 packages of
#       CPython 3.11 and its libraries (apt-get download + dpkg -x, after
#       `dpkg --add-architecture arm64`), plus the aarch64 wheels of
#       ai-edge-litert and numpy at the versions pinned in requirements.txt
#       (pip download, unzipped, never installed). Prints the root's folder.
#       Cached in $TFQ_ARM_ENV (default ~/.cache/tfq/aarch64-py311, about
#       150 MB): a second run reads nothing from the network. Downloads are
#       retried (4 attempts); an unreachable registry ends with a message
#       naming it.
#
#   bash scripts/arm_env.sh run [--cpu MODEL] [--delegate LIB] SCRIPT [ARGS...]
#       Runs SCRIPT with the emulated Python under `qemu-aarch64 -cpu MODEL`
#       (default max: ARMv8.2+ with the dot product; cortex-a53: plain NEON).
#       LIB (default build-aarch64/libtfq_delegate.so, the cross-compiled
#       delegate) is passed to the script as $TFQ_DELEGATE_PATH. LiteRT's CPU
#       detection reads /proc/cpuinfo and crashes on the host's x86 one, so the
#       run happens in a private mount namespace (unshare -m; as root, or with
#       a user namespace otherwise) where an aarch64 cpuinfo is bind-mounted
#       over /proc/cpuinfo. The script sees only the emulated Python's
#       packages (numpy, ai_edge_litert): no TensorFlow, no Keras, no tfq.
#
# Needs qemu-user, dpkg/apt-get (Debian or Ubuntu host) and util-linux's
# unshare; scripts/setup_env.sh installs them, and runs `prepare` for test.sh.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_HOME="${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}"
ENV_DIR="${TFQ_ARM_ENV:-${CACHE_HOME:-$REPO/build-arm-env}/tfq/aarch64-py311}"

# CPython 3.11 and the shared libraries its interpreter and stdlib extension
# modules load, plus libstdc++ and libgcc for LiteRT and the delegate.
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 zlib1g libexpat1
      libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0 libncursesw6 libtinfo6 libreadline8
      libuuid1 libgcc-s1 libstdc++6 libcrypt1 libnsl2 libtirpc3 libdb5.3 libgdbm6 media-types)
WHEELS=(ai-edge-litert numpy)
TRIES="${TFQ_ARM_TRIES:-4}"

die() { echo "arm_env: $*" >&2; exit 1; }
log() { echo "[arm_env] $*" >&2; }

retry() {  # retry CMD...: up to $TRIES attempts, waiting 5, 10, 20 s in between
  local i wait=5
  for ((i = 1; i <= TRIES; i++)); do
    "$@" && return 0
    [ "$i" -lt "$TRIES" ] && { log "failed (attempt $i/$TRIES): $*; retrying in ${wait}s"; sleep "$wait"; wait=$((wait * 2)); }
  done
  return 1
}

wheel_pins() {  # the versions pinned in requirements.txt (one home for them)
  local name pin
  for name in "${WHEELS[@]}"; do
    pin="$(grep -iE "^${name}==" "$REPO/requirements.txt" | head -1)"
    [ -n "$pin" ] || die "requirements.txt pins no version of $name"
    echo "$pin"
  done
}

spec() {  # what the cached environment was made from: a change rebuilds it (bump "layout"
          # when what prepare writes changes, e.g. the cpuinfo files)
  printf '%s\n' "layout 1" "${DEBS[@]}" $(wheel_pins)
}

write_cpuinfo() {  # write_cpuinfo FILE PART FEATURES: an aarch64-style /proc/cpuinfo, two cores
  local i
  : > "$1"
  for i in 0 1; do
    printf 'processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 4\n\n' \
      "$i" "$3" "$2" >> "$1"
  done
}

prepare() {
  local want
  want="$(spec | sha256sum | cut -d' ' -f1)"
  mkdir -p "$ENV_DIR"
  exec 9> "$ENV_DIR/.lock"
  flock 9
  if [ "$(cat "$ENV_DIR/root/.spec" 2>/dev/null)" = "$want" ]; then
    echo "$ENV_DIR/root"
    return 0
  fi
  command -v dpkg >/dev/null && command -v apt-get >/dev/null \
    || die "needs dpkg and apt-get (a Debian or Ubuntu host) to fetch Debian's arm64 CPython"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "dpkg --add-architecture arm64"
    $sudo dpkg --add-architecture arm64
  fi
  if ! apt-cache show python3.11-minimal:arm64 >/dev/null 2>&1; then
    log "apt-get update (arm64 package lists)"
    retry $sudo apt-get update -qq \
      || die "apt-get update failed: is the Debian archive reachable? (see the messages above)"
  fi
  apt-cache show python3.11-minimal:arm64 >/dev/null 2>&1 \
    || die "no arm64 python3.11-minimal in the apt sources (this needs Debian 12 or a release with CPython 3.11)"

  local tmp="$ENV_DIR/tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp/debs" "$tmp/wheels" "$tmp/root/site"
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT
  log "apt-get download ${#DEBS[@]} arm64 packages"
  local names=() p
  for p in "${DEBS[@]}"; do
    case "$p" in media-types) names+=("$p") ;; *) names+=("$p:arm64") ;; esac
  done
  # -o APT::Sandbox::User=root: the _apt user may not write into $HOME.
  if ! (cd "$tmp/debs" && apt-get download -q -o APT::Sandbox::User=root "${names[@]}" >/dev/null); then
    # Old package lists name versions the archive no longer has: refresh them once.
    log "apt-get download failed; apt-get update and retrying"
    retry $sudo apt-get update -qq || die "apt-get update failed: is the Debian archive reachable?"
    (cd "$tmp/debs" && retry apt-get download -q -o APT::Sandbox::User=root "${names[@]}" >/dev/null) \
      || die "apt-get download of the arm64 packages failed (Debian archive unreachable?)"
  fi
  for p in "$tmp"/debs/*.deb; do dpkg -x "$p" "$tmp/root"; done
  [ -x "$tmp/root/usr/bin/python3.11" ] || die "python3.11 missing after unpacking the packages"

  local py="$REPO/.venv/bin/python"
  [ -x "$py" ] || py="python3"
  log "pip download $(wheel_pins | tr '\n' ' ')(aarch64, CPython 3.11)"
  retry "$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64 \
      --python-version 3.11 --implementation cp --abi cp311 -d "$tmp/wheels" $(wheel_pins) \
    || die "pip download of the aarch64 wheels failed (PyPI unreachable, or no aarch64 wheel of: $(wheel_pins | tr '\n' ' '))"
  for p in "$tmp"/wheels/*.whl; do "$py" -m zipfile -e "$p" "$tmp/root/site"; done
  [ -d "$tmp/root/site/ai_edge_litert" ] && [ -d "$tmp/root/site/numpy" ] \
    || die "the unpacked wheels lack ai_edge_litert or numpy"

  # Cortex-A53 (ARMv8.0, no dot product) and a Neoverse-N1-like ARMv8.2 core.
  write_cpuinfo "$tmp/root/cpuinfo-v8" 0xd03 "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
  write_cpuinfo "$tmp/root/cpuinfo-v82" 0xd0c \
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
  echo "$want" > "$tmp/root/.spec"
  rm -rf "$ENV_DIR/root"
  mv "$tmp/root" "$ENV_DIR/root"
  rm -rf "$tmp"
  trap - EXIT
  log "ready: $ENV_DIR/root ($(du -sh "$ENV_DIR/root" | cut -f1))"
  echo "$ENV_DIR/root"
}

run() {
  local cpu=max delegate="$REPO/build-aarch64/libtfq_delegate.so"
  while [ $# -gt 0 ]; do
    case "$1" in
      --cpu) cpu="$2"; shift 2 ;;
      --cpu=*) cpu="${1#--cpu=}"; shift ;;
      --delegate) delegate="$2"; shift 2 ;;
      --delegate=*) delegate="${1#--delegate=}"; shift ;;
      --) shift; break ;;
      -*) die "unknown option $1 (run [--cpu MODEL] [--delegate LIB] SCRIPT [ARGS...])" ;;
      *) break ;;
    esac
  done
  [ $# -ge 1 ] || die "run needs a Python script (run [--cpu MODEL] [--delegate LIB] SCRIPT [ARGS...])"
  local root="$ENV_DIR/root"
  [ -f "$root/.spec" ] || die "no emulated Python in $ENV_DIR: run 'bash scripts/arm_env.sh prepare' first"
  [ -f "$delegate" ] || die "delegate library $delegate not found: cross-compile it with
  cmake -S tfq/delegates -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=\$PWD/cmake/aarch64-linux-gnu.toolchain.cmake -DTFQ_COPY_TO_SOURCE=OFF
  cmake --build build-aarch64 --target tfq_delegate"
  command -v qemu-aarch64 >/dev/null || die "qemu-aarch64 not found: apt-get install qemu-user"
  local cpuinfo="$root/cpuinfo-v82"
  case "$cpu" in cortex-a53 | cortex-a57 | cortex-a72) cpuinfo="$root/cpuinfo-v8" ;; esac
  local userns=()
  [ "$(id -u)" = 0 ] || userns=(--map-root-user)
  delegate="$(cd "$(dirname "$delegate")" && pwd)/$(basename "$delegate")"
  # The bind mount lives only in the new mount namespace (private propagation).
  exec unshare "${userns[@]}" --mount --propagation private \
    env TFQ_ARM_CPUINFO="$cpuinfo" TFQ_DELEGATE_PATH="$delegate" PYTHONHOME="$root/usr" \
      PYTHONPATH="$root/site" PYTHONNOUSERSITE=1 \
    sh -c 'root="$0" cpu="$1"; shift
           mount --bind "$TFQ_ARM_CPUINFO" /proc/cpuinfo \
             || { echo "arm_env: cannot bind-mount an aarch64 cpuinfo over /proc/cpuinfo (needs root or user namespaces)" >&2; exit 125; }
           exec qemu-aarch64 -L "$root" -cpu "$cpu" "$root/usr/bin/python3.11" "$@"' \
    "$root" "$cpu" "$@"
}

case "${1:-prepare}" in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) die "usage: arm_env.sh prepare | run [--cpu MODEL] [--delegate LIB] SCRIPT [ARGS...]" ;;
esac
