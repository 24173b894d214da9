#!/usr/bin/env bash
# Install (or remove) ds01-controller as a systemd service on this host.
#
#   sudo deploy/install.sh                 install or upgrade; then: systemctl enable --now ds01-controller
#   sudo deploy/install.sh --uninstall     remove the program and the unit; keeps config, state and logs
#
# Options:
#   --python PATH    interpreter for the virtualenv (default: python3; needs 3.11 or newer)
#   --source SPEC    what pip installs (default: this checkout; a built wheel works offline)
#   --no-venv        do not create the virtualenv or run pip (it is managed some other way)
#   -h, --help       this text
# Environment:
#   DESTDIR          stage everything under this directory instead of / (packaging, tests);
#                    systemctl is not called and systemd-tmpfiles runs with --root
#   PIP_*            passed through to pip (PIP_INDEX_URL, PIP_NO_INDEX, PIP_FIND_LINKS, ...)
#
# What goes where (ours: replaced on every install; yours: installed once, never overwritten once
# edited; one still exactly as the previous version shipped it takes this version's):
#   /opt/ds01-controller/                           ours   virtualenv with the package, share/ copies
#   /usr/local/bin/ds01-controller, ds01ctl         ours   symlinks into the virtualenv
#   /usr/local/lib/systemd/system/ds01-controller.service   ours   change it with `systemctl edit`
#   /usr/local/lib/tmpfiles.d/ds01-controller.conf  ours   override with /etc/tmpfiles.d/ of the same name
#   /etc/ds01/controller.env                        yours  settings (first install: dry-run)
#   /etc/logrotate.d/ds01-controller                yours  event log rotation (left out while another
#                                                          file, such as DS01's /etc/logrotate.d/ds01,
#                                                          rotates the event log: logrotate refuses a
#                                                          log named twice)
#   /var/lib/ds01 (0700), /var/log/ds01 (0750 root:adm)    created only when missing (also at boot);
#                                                          a /var/log/ds01 others can write is named, with the fix
# Needs: python3 3.11+ with venv and ensurepip (Debian/Ubuntu: apt-get install python3-venv).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

OPT_DIR=/opt/ds01-controller
BIN_DIR=/usr/local/bin
UNIT_DIR=/usr/local/lib/systemd/system
TMPFILES_DIR=/usr/local/lib/tmpfiles.d
ENV_FILE=/etc/ds01/controller.env
LOGROTATE_FILE=/etc/logrotate.d/ds01-controller
EVENTS_LOG=/var/log/ds01/events.jsonl
STATE_DIR=/var/lib/ds01
LOG_DIR=/var/log/ds01
UNIT=ds01-controller.service
COMMANDS=(ds01-controller ds01ctl)

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PYTHON=python3
SOURCE=$REPO
MAKE_VENV=1
ACTION=install

log() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --uninstall) ACTION=uninstall ;;
    --no-venv) MAKE_VENV=0 ;;
    --python) [ $# -ge 2 ] || die "--python needs a path"; PYTHON=$2; shift ;;
    --source) [ $# -ge 2 ] || die "--source needs a directory or wheel"; SOURCE=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done

if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (or set DESTDIR to stage the files somewhere else)"
fi

# systemd is only driven on the live system, and only when it is the init system.
live_systemd() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

# Install a file that belongs to the admin after the first install: never overwrite it.
install_admin_file() {
  local src=$1 dest=$2 mode=$3
  # The previous install's reference copy of this file: an admin file still exactly that is one
  # nobody edited, and takes this version's (as dpkg treats an unchanged conffile).
  local before=$DESTDIR$OPT_DIR/share/deploy/${src#"$HERE"/}
  if [ ! -e "$DESTDIR$dest" ]; then
    install -D -m "$mode" "$src" "$DESTDIR$dest"
    log "installed $dest"
  elif cmp -s "$src" "$DESTDIR$dest"; then
    log "unchanged $dest"
  elif [ -f "$before" ] && [ ! -L "$DESTDIR$dest" ] && cmp -s "$before" "$DESTDIR$dest"; then
    install -m "$mode" "$src" "$DESTDIR$dest"
    log "updated $dest (it was the previous version's, unedited)"
  else
    log "kept your $dest (it differs from the shipped $OPT_DIR/share/deploy/${src#"$HERE"/}; merge by hand if wanted)"
  fi
}

# Whether the logrotate file $1 names the event log, by its name or by a glob that matches it. Only
# the names before each block's "{" count; scripts (postrotate ... endscript) are skipped.
rotates_events_log() {
  local in_block=0 in_script=0 line word
  local -a words
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    read -r -a words <<<"$line" || true
    if [ "$in_script" = 1 ]; then
      [ "${words[0]:-}" = endscript ] && in_script=0
      continue
    fi
    for word in "${words[@]}"; do
      case "$word" in
        postrotate|prerotate|firstaction|lastaction|preremove) [ "$in_block" = 1 ] && in_script=1; break ;;
        '}') in_block=0; continue ;;
      esac
      [ "$in_block" = 1 ] && break
      local opens=0
      case "$word" in *'{') opens=1; word=${word%'{'} ;; esac
      word=${word#[\"\']}
      word=${word%[\"\']}
      # A glob's "*" never crosses a "/" in logrotate: compare names with as many components only.
      if [ -n "$word" ] && [ "${word//[!\/]/}" = "${EVENTS_LOG//[!\/]/}" ]; then
        # shellcheck disable=SC2053 # the right-hand side is logrotate's glob, matched as a pattern
        [[ $EVENTS_LOG == $word ]] && return 0
      fi
      [ "$opens" = 1 ] && in_block=1
    done
  done <"$1"
  return 1
}

# The logrotate files other than ours that rotate the event log (DS01's own /etc/logrotate.d/ds01
# does), as the host's logrotate reads them: names logrotate skips (*.dpkg-old, *.disabled, ...) aside.
other_event_log_rotations() {
  local f
  for f in "$DESTDIR/etc/logrotate.conf" "$DESTDIR"/etc/logrotate.d/*; do
    [ -f "$f" ] && [ "$f" != "$DESTDIR$LOGROTATE_FILE" ] || continue
    case "$f" in
      *,v|*.cfsaved|*.disabled|*.dpkg-*|*.rhn-cfg-tmp-*|*.rpmnew|*.rpmorig|*.rpmsave|*.swp|*.ucf-*|*~) continue ;;
    esac
    if rotates_events_log "$f"; then
      printf '%s\n' "${f#"$DESTDIR"}"
    fi
  done
}

# The version of systemd-tmpfiles, or 0 when there is none.
tmpfiles_version() {
  local v
  v=$(systemd-tmpfiles --version 2>/dev/null | sed -n '1s/^systemd \([0-9][0-9]*\).*/\1/p')
  echo "${v:-0}"
}

# Create a directory with a mode and owner only when it does not exist: on a DS01 host these are
# shared with DS01's own scripts and their existing modes and owners must stay as they are.
make_dir_if_missing() {
  local dir=$1 mode=$2 owner=$3 group=$4
  if [ -d "$DESTDIR$dir" ]; then
    log "exists $dir (left as it is)"
    return
  fi
  if [ -n "$DESTDIR" ] || ! getent group "$group" >/dev/null 2>&1; then
    install -d -m "$mode" "$DESTDIR$dir"
  else
    install -d -m "$mode" -o "$owner" -g "$group" "$DESTDIR$dir"
  fi
  log "created $dir ($mode)"
}

# The event log's directory must be root's alone: a user who can write it can create events.jsonl
# after a rotation, and the controller (root without CAP_DAC_OVERRIDE) cannot append to that file,
# so its destructive actions pause. An existing directory is shared with DS01's scripts and left as
# it is: it is named, with the fix. (Under DESTDIR the owner is the stager's: only the mode counts.)
warn_if_log_dir_unsafe() {
  local dir=$DESTDIR$LOG_DIR owner perms
  [ -d "$dir" ] && [ ! -L "$dir" ] || return 0
  owner=$(stat -c %u "$dir")
  perms=$(stat -c %a "$dir")
  if (( 8#$perms & 8#022 )) || { [ -z "$DESTDIR" ] && [ "$owner" != 0 ]; }; then
    log "warning: $LOG_DIR has mode $(printf '%04o' "$((8#$perms))") and owner uid $owner: another user can create" \
      "the event log there and lock the controller out of its record; fix: chown root:root $LOG_DIR && chmod 0755 $LOG_DIR"
  fi
}

do_install() {
  if [ "$MAKE_VENV" = 1 ]; then
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
      || die "$PYTHON is missing or older than 3.11; pass --python /path/to/python3.11"
    if [ ! -x "$DESTDIR$OPT_DIR/bin/python" ]; then
      # Debian and Ubuntu ship venv's pip bootstrap (ensurepip) in a package of its own.
      "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "$PYTHON cannot create a virtualenv (no ensurepip): on Debian or Ubuntu, apt-get install python3-venv"
      log "creating virtualenv $OPT_DIR"
      "$PYTHON" -m venv "$DESTDIR$OPT_DIR"
    fi
    log "installing $SOURCE into $OPT_DIR"
    "$DESTDIR$OPT_DIR/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SOURCE"
    if [ -f "$SOURCE" ]; then
      # A wheel (or sdist) of the version already installed is "already satisfied" to pip, which
      # then keeps the old code; the version is not bumped per build, so install this file's.
      "$DESTDIR$OPT_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
        --force-reinstall --no-deps "$SOURCE"
    fi
  fi

  for cmd in "${COMMANDS[@]}"; do
    local link=$DESTDIR$BIN_DIR/$cmd
    if [ -e "$link" ] && [ ! -L "$link" ]; then
      die "$BIN_DIR/$cmd exists and is not our symlink; move it away and run again"
    fi
    install -d "$DESTDIR$BIN_DIR"
    ln -sfn "$OPT_DIR/bin/$cmd" "$link"
  done
  log "linked ${COMMANDS[*]} in $BIN_DIR"

  install -D -m 0644 "$HERE/$UNIT" "$DESTDIR$UNIT_DIR/$UNIT"
  install -D -m 0644 "$HERE/tmpfiles.d/ds01-controller.conf" "$DESTDIR$TMPFILES_DIR/ds01-controller.conf"
  local tmpfiles_v
  tmpfiles_v=$(tmpfiles_version)
  if [ "$tmpfiles_v" -gt 0 ] && [ "$tmpfiles_v" -lt 252 ]; then
    # The ":" prefixes (modes only for new directories) need systemd 252; older versions reject the
    # lines. Without them an explicit mode would chmod DS01's shared directories at every boot.
    sed -i -E '/^d[[:space:]]/s/[[:space:]]+:[^[:space:]]+/ -/g' "$DESTDIR$TMPFILES_DIR/ds01-controller.conf"
    log "systemd $tmpfiles_v is older than 252: $TMPFILES_DIR/ds01-controller.conf recreates missing directories 0755 root:root"
  fi
  log "installed $UNIT_DIR/$UNIT and $TMPFILES_DIR/ds01-controller.conf"

  # The admin's files first: each is compared with the previous install's reference copy.
  install -d -m 0755 "$DESTDIR$(dirname "$ENV_FILE")"
  install_admin_file "$HERE/controller.env" "$ENV_FILE" 0644
  # logrotate refuses a log that two files name: it skips the second and fails on every run. Where
  # another file rotates the event log already (DS01's /etc/logrotate.d/ds01 does), ours waits.
  local other
  other=$(other_event_log_rotations | head -n 1)
  if [ -n "$other" ] && [ ! -e "$DESTDIR$LOGROTATE_FILE" ]; then
    log "not installed $LOGROTATE_FILE: $other already rotates $EVENTS_LOG, and logrotate refuses a log named twice;"
    log "  take $EVENTS_LOG out of $other (ours never loses or splits a line) and run the installer again"
  elif [ -n "$other" ]; then
    install_admin_file "$HERE/logrotate.d/ds01-controller" "$LOGROTATE_FILE" 0644
    log "warning: $other already rotates $EVENTS_LOG as $LOGROTATE_FILE does: logrotate skips one and"
    log "  fails on every run; take $EVENTS_LOG out of $other (ours never loses or splits a line)"
  else
    install_admin_file "$HERE/logrotate.d/ds01-controller" "$LOGROTATE_FILE" 0644
  fi

  # Reference copies, so an admin can diff a kept config file against what this version ships.
  rm -rf "$DESTDIR$OPT_DIR/share/deploy" "$DESTDIR$OPT_DIR/share/doc"
  install -d "$DESTDIR$OPT_DIR/share/deploy" "$DESTDIR$OPT_DIR/share/doc"
  cp -R "$HERE/." "$DESTDIR$OPT_DIR/share/deploy/"
  if [ -d "$REPO/docs" ]; then
    cp -R "$REPO/docs/." "$DESTDIR$OPT_DIR/share/doc/"
  fi

  make_dir_if_missing "$STATE_DIR" 0700 root root
  make_dir_if_missing "$LOG_DIR" 0750 root adm
  warn_if_log_dir_unsafe
  if command -v systemd-tmpfiles >/dev/null 2>&1; then
    if [ -n "$DESTDIR" ]; then
      systemd-tmpfiles --root="$DESTDIR" --create "$DESTDIR$TMPFILES_DIR/ds01-controller.conf"
    else
      systemd-tmpfiles --create "$TMPFILES_DIR/ds01-controller.conf"
    fi
  else
    log "systemd-tmpfiles not found: $STATE_DIR and $LOG_DIR will not be recreated at boot if removed"
  fi

  if live_systemd; then
    systemctl daemon-reload
    if systemctl is-active --quiet "$UNIT"; then
      log "the service is running the previous version: systemctl restart $UNIT"
    else
      log "next: review $ENV_FILE, then: systemctl enable --now $UNIT"
    fi
  else
    log "systemd not driven (DESTDIR set or systemd is not running); nothing enabled"
  fi
  log "done"
}

do_uninstall() {
  if live_systemd; then
    systemctl disable --now "$UNIT" 2>/dev/null || true
  fi
  rm -f "$DESTDIR$UNIT_DIR/$UNIT" "$DESTDIR$TMPFILES_DIR/ds01-controller.conf"
  for cmd in "${COMMANDS[@]}"; do
    local link=$DESTDIR$BIN_DIR/$cmd
    if [ -L "$link" ] && [ "$(readlink "$link")" = "$OPT_DIR/bin/$cmd" ]; then
      rm -f "$link"
    fi
  done
  # The admin's logrotate file goes only if it is still exactly what was shipped.
  if [ -e "$DESTDIR$LOGROTATE_FILE" ]; then
    if cmp -s "$HERE/logrotate.d/ds01-controller" "$DESTDIR$LOGROTATE_FILE"; then
      rm -f "$DESTDIR$LOGROTATE_FILE"
    else
      log "kept your modified $LOGROTATE_FILE"
    fi
  fi
  # Guarded so that a mangled variable can never turn this into a wider rm -rf.
  case "$DESTDIR$OPT_DIR" in
    */opt/ds01-controller) rm -rf "$DESTDIR$OPT_DIR" ;;
  esac
  if live_systemd; then
    systemctl daemon-reload
  fi
  log "removed the program, the unit and the tmpfiles entry"
  log "kept: $ENV_FILE, $STATE_DIR, $LOG_DIR (delete them by hand if they are no longer wanted)"
}

case "$ACTION" in
  install) do_install ;;
  uninstall) do_uninstall ;;
esac
