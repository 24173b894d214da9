#!/usr/bin/env bash
# Prepare this host for the controller and its tests: system packages, a virtualenv with the
# project, and a running Docker engine. Idempotent; safe to run again.
#   DS01_SETUP_TEST=1   also install test tools (debootstrap for the real-systemd test included,
#                       promtool from Debian's prometheus package for the alert rules, valgrind
#                       for the planner's instruction count, btrfs-progs for a lock on a subvolume)
#                       and the test image/runtime shims
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${DS01_VENV:-$ROOT/.venv}
log() { printf '[setup] %s\n' "$*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
if [ "${DS01_SETUP_TEST:-0}" = 1 ]; then
  dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
  command -v gcc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
  command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
  command -v logrotate >/dev/null 2>&1 || need_pkgs+=(logrotate)
  command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
  # `ds01ctl get -w` is tested in a real terminal.
  command -v tmux >/dev/null 2>&1 || need_pkgs+=(tmux)
  # The real-systemd test builds a Debian root file system (tests/fixtures/systemd_box.py).
  dpkg -s debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need_pkgs+=(debian-archive-keyring)
  # scripts/check.sh runs `promtool check rules` and `promtool test rules` on deploy/prometheus/;
  # Debian ships promtool in the prometheus package (whose server is not wanted here: see below).
  command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
  # `python -m bench.instructions` counts a plan's instructions under callgrind (and is tested).
  [ -f /usr/include/valgrind/callgrind.h ] || need_pkgs+=(valgrind)
  # ds01ctl's "controller is not running" note is tested on a btrfs subvolume (a loop image).
  command -v mkfs.btrfs >/dev/null 2>&1 || need_pkgs+=(btrfs-progs)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing packages ${need_pkgs[*]}: run as root or install them"; exit 1; fi
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    # Only promtool is wanted: the package's Prometheus server would otherwise listen on :9090.
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
extras=""
[ "${DS01_SETUP_TEST:-0}" = 1 ] && extras="[test,report]"  # report: matplotlib, so the --plot test draws a real PNG
stamp="$VENV/.ds01-installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "installing the project into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e ".$extras"
  touch "$stamp"
fi

# --- Docker engine -------------------------------------------------------------------------
# A no-op nvidia-container-runtime-hook on dockerd's PATH registers the nvidia device driver so
# that `--gpus device=...` containers start on a host with no GPU; `--runtime=nvidia` is mapped
# to plain runc. Both only matter where no real NVIDIA toolkit is installed.
HOOK_DIR=/usr/local/lib/ds01-gpu-shim
if ! timeout 20 docker info >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then log "no Docker engine answers and we are not root: start dockerd"; exit 1; fi
  extra_args=()
  if ! command -v nvidia-container-runtime-hook >/dev/null 2>&1; then
    mkdir -p "$HOOK_DIR"
    printf '#!/bin/sh\ncat >/dev/null\nexit 0\n' > "$HOOK_DIR/nvidia-container-runtime-hook"
    chmod 755 "$HOOK_DIR/nvidia-container-runtime-hook"
    extra_args+=(--add-runtime "nvidia=$(command -v runc)")
  fi
  rm -f /var/run/docker.pid
  log "starting dockerd"
  PATH="$HOOK_DIR:$PATH" nohup dockerd "${extra_args[@]}" >/var/log/ds01-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do timeout 10 docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { log "dockerd did not come up; see /var/log/ds01-dockerd.log"; tail -20 /var/log/ds01-dockerd.log >&2; exit 1; }
fi

if [ "${DS01_SETUP_TEST:-0}" = 1 ] && ! docker image inspect ds01-test/busybox:latest >/dev/null 2>&1; then
  log "building test image ds01-test/busybox from busybox-static"
  tmp=$(mktemp -d)
  mkdir -p "$tmp"/{bin,workspace,tmp,proc,sys,dev,etc}
  cp /bin/busybox "$tmp/bin/busybox"
  for c in sh sleep touch cat ls yes dd ps ln kill true mkfifo mkdir rm echo; do ln -sf busybox "$tmp/bin/$c"; done
  tar -C "$tmp" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'LABEL ds01.test=image' - ds01-test/busybox:latest >/dev/null
  rm -rf "$tmp"
fi
log "ready: $VENV"
