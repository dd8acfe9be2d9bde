#!/usr/bin/env bash
# Removes coap2mqtt installed by install.sh: stops and disables the service, removes the program, the unit
# and the command. The configuration (/etc/coap2mqtt) and the state (/var/lib/coap2mqtt: readings not yet
# delivered) are kept unless --purge.
#
#   sudo /opt/coap2mqtt/systemd/uninstall.sh [--purge]
#   uninstall.sh --root DIR [--purge]     the same under DIR, without systemctl or user changes
set -euo pipefail

say() { printf '%s\n' "$*"; }
fail() {
  printf 'coap2mqtt: %s\n' "$*" >&2
  exit 1
}

ROOT=""
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root)
      [ $# -ge 2 ] || fail "--root needs a directory"
      ROOT=$2
      shift 2
      ;;
    --root=*)
      ROOT=${1#--root=}
      shift
      ;;
    --purge)
      PURGE=1
      shift
      ;;
    -h | --help)
      say "Usage: uninstall.sh [--purge] [--root DIR]"
      say "  --purge     also delete /etc/coap2mqtt, /var/lib/coap2mqtt (undelivered readings!) and the coap2mqtt user"
      say "  --root DIR  uninstall from under DIR (no systemctl or user changes)"
      exit 0
      ;;
    *)
      fail "unknown option $1 (uninstall.sh --help)"
      ;;
  esac
done

SYSTEM=1
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || fail "$ROOT does not exist"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" != / ] || ROOT=""
  SYSTEM=0
elif [ "$(id -u)" -ne 0 ]; then
  fail "run this as root: sudo $0"
fi

PREFIX=$ROOT/opt/coap2mqtt
ETC=$ROOT/etc/coap2mqtt
STATE=$ROOT/var/lib/coap2mqtt
BIN=$ROOT/usr/local/bin/coap2mqtt
UNIT=$ROOT/usr/local/lib/systemd/system/coap2mqtt.service
SYSUSERS=$ROOT/usr/local/lib/sysusers.d/coap2mqtt.conf

if [ "$SYSTEM" = 1 ] && [ -d /run/systemd/system ]; then
  state=$(systemctl show -p ActiveState --value coap2mqtt 2> /dev/null || echo unknown)
  # Unconditionally: also ends a restart loop ("activating"), and a service whose unit file is already gone.
  # SIGTERM: requests in progress are answered and accepted readings committed before it exits.
  systemctl stop coap2mqtt 2> /dev/null || true
  systemctl disable coap2mqtt 2> /dev/null || true
  rm -f /etc/systemd/system/multi-user.target.wants/coap2mqtt.service
  say "stopped (it was ${state:-unknown}) and disabled the coap2mqtt service"
fi

rm -f "$UNIT" "$BIN"
rm -rf "$PREFIX" "$PREFIX.new" "$PREFIX.old"
say "removed $PREFIX, $BIN and $UNIT"
if [ "$SYSTEM" = 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reset-failed coap2mqtt 2> /dev/null || true
fi

if [ "$PURGE" = 1 ]; then
  rm -rf "$ETC" "$STATE"
  rm -f "$SYSUSERS"
  say "purged $ETC (configuration, device tokens and keys) and $STATE (state, outbox)"
  if [ "$SYSTEM" = 1 ] && getent passwd coap2mqtt > /dev/null; then
    if userdel coap2mqtt; then
      if getent group coap2mqtt > /dev/null; then groupdel coap2mqtt 2> /dev/null || true; fi
      say "removed the user and group coap2mqtt"
    else
      say "warning: the user coap2mqtt was not removed (see above); remove it later with: sudo userdel coap2mqtt"
    fi
  fi
else
  say "kept $ETC (configuration: device tokens and keys) and $STATE (the outbox: readings not yet delivered),"
  say "  and the coap2mqtt user. A later install uses them again. To delete them too: $0 --purge${ROOT:+ --root $ROOT}"
fi
