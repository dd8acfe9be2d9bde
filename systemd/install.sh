#!/usr/bin/env bash
# Installs coap2mqtt as a systemd service, from a checkout where "npm ci" has run or from an unpacked release
# tarball (systemd/pack.sh). Running it again upgrades: the program is replaced, the configuration and the
# state (the outbox) are kept.
#
#   sudo systemd/install.sh              install, enable and start; on an upgrade, restart
#   sudo systemd/install.sh --no-start   install, but leave enabling and starting to you
#   systemd/install.sh --root DIR        install under DIR (packaging, tests): no user, chown or systemctl
#
# What goes where:
#   /opt/coap2mqtt/                                    the program (dist, node_modules, native bindings)
#   /etc/coap2mqtt/config.json5, devices.json          configuration, root:coap2mqtt 0640 (never overwritten)
#   /var/lib/coap2mqtt/                                state: the outbox, caches (coap2mqtt 0750)
#   /usr/local/bin/coap2mqtt                           the command, using /etc/coap2mqtt/config.json5
#   /usr/local/lib/systemd/system/coap2mqtt.service    the unit (local changes: systemctl edit coap2mqtt)
#   /usr/local/lib/sysusers.d/coap2mqtt.conf           the coap2mqtt user and group
set -euo pipefail
umask 022

SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=systemd/lib.sh
. "$SRC/systemd/lib.sh"

usage() {
  cat <<'EOF'
Usage: install.sh [--no-start] [--root DIR]
  --no-start   install (or upgrade) without enabling, starting or restarting the service
  --root DIR   install under DIR instead of / (for packaging); no user, ownership or systemctl changes
Run as root from a checkout after "npm ci", or from an unpacked release tarball.
EOF
}

ROOT=""
START=1
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
    --no-start)
      START=0
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
done

SYSTEM=1 # a real installation: users, ownership, systemctl
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" != / ] || ROOT=""
  SYSTEM=0
  START=0
elif [ "$(id -u)" -ne 0 ]; then
  fail "run this as root: sudo $0"
fi

PREFIX=$ROOT/opt/coap2mqtt
ETC=$ROOT/etc/coap2mqtt
STATE=$ROOT/var/lib/coap2mqtt
BIN=$ROOT/usr/local/bin/coap2mqtt
UNIT=$ROOT/usr/local/lib/systemd/system/coap2mqtt.service
SYSUSERS=$ROOT/usr/local/lib/sysusers.d/coap2mqtt.conf

[ "$SRC" != "$PREFIX" ] || fail "run install.sh from the checkout or the unpacked release, not from $PREFIX"

find_node

# 1. The program, assembled beside the old one and checked before it replaces it.
say "copying the program from $SRC"
rm -rf "$PREFIX.new"
copy_program "$SRC" "$PREFIX.new"
check_program "$PREFIX.new"
VERSION=$("$NODE" -p 'require(process.argv[1]).version' "$PREFIX.new/package.json")

# 2. The service's user and group.
mkdir -p "$(dirname "$SYSUSERS")"
install -m 0644 "$SRC/systemd/coap2mqtt.sysusers" "$SYSUSERS"
if [ "$SYSTEM" = 1 ]; then
  if command -v systemd-sysusers > /dev/null; then
    systemd-sysusers "$SYSUSERS"
  elif ! getent passwd coap2mqtt > /dev/null; then
    getent group coap2mqtt > /dev/null || groupadd --system coap2mqtt
    useradd --system --gid coap2mqtt --home-dir /var/lib/coap2mqtt --no-create-home \
      --shell /usr/sbin/nologin --comment "coap2mqtt gateway" coap2mqtt
  fi
  getent passwd coap2mqtt > /dev/null || fail "could not create the system user coap2mqtt"
fi
own() { if [ "$SYSTEM" = 1 ]; then chown "$@"; fi; }

# 3. Swap the program in. The running service keeps its files open until the restart below.
UPGRADE=0
if [ -d "$PREFIX" ] && [ -e "$ETC/config.json5" ]; then
  # An upgrade whose new version refuses the configuration leaves the running version in place.
  if ! COAP2MQTT_CONFIG="$ETC/config.json5" "$NODE" "$PREFIX.new/dist/cli.js" check-config > /dev/null 2>&1; then
    COAP2MQTT_CONFIG="$ETC/config.json5" "$NODE" "$PREFIX.new/dist/cli.js" check-config 2>&1 | sed 's/^/    /' || true
    rm -rf "$PREFIX.new"
    fail "coap2mqtt $VERSION does not accept $ETC/config.json5 (above); the installed version was left as it was. Fix the configuration and run install.sh again"
  fi
fi
if [ -d "$PREFIX" ]; then
  UPGRADE=1
  PREVIOUS=$("$NODE" -p 'require(process.argv[1]).version' "$PREFIX/package.json" 2> /dev/null || echo unknown)
  rm -rf "$PREFIX.old"
  mv "$PREFIX" "$PREFIX.old"
  mv "$PREFIX.new" "$PREFIX"
  rm -rf "$PREFIX.old"
  say "upgraded $PREFIX: $PREVIOUS -> $VERSION"
else
  mkdir -p "$(dirname "$PREFIX")"
  mv "$PREFIX.new" "$PREFIX"
  say "installed coap2mqtt $VERSION in $PREFIX"
fi

# 4. Configuration: created from the example only when absent; a technician's file is never touched.
mkdir -p "$ETC"
chmod 0750 "$ETC"
own root:coap2mqtt "$ETC"
NEW_CONFIG=0
if [ ! -e "$ETC/config.json5" ]; then
  install -m 0640 "$PREFIX/config/example.json5" "$ETC/config.json5"
  own root:coap2mqtt "$ETC/config.json5"
  NEW_CONFIG=1
  say "created $ETC/config.json5 from the example: edit upstream.url, upstream.accessToken and devices"
else
  say "kept $ETC/config.json5 (never overwritten; the current example is $PREFIX/config/example.json5)"
fi
# "coap2mqtt devices add" keeps the owner and mode of an existing devices file: create it readable by the service.
if [ ! -e "$ETC/devices.json" ]; then
  printf '[]\n' > "$ETC/devices.json"
  chmod 0640 "$ETC/devices.json"
  own root:coap2mqtt "$ETC/devices.json"
fi
if [ "$SYSTEM" = 1 ] && command -v runuser > /dev/null; then
  for file in "$ETC/config.json5" "$ETC/devices.json"; do
    if ! runuser -u coap2mqtt -- test -r "$file" 2> /dev/null; then
      say "warning: the service (user coap2mqtt) cannot read $file; fix it with: sudo chgrp coap2mqtt $file && sudo chmod 0640 $file"
    fi
  done
fi

# 5. State: the outbox lives here across upgrades. Files a root-run gateway may have left go back to the service.
mkdir -p "$STATE"
chmod 0750 "$STATE"
own -R coap2mqtt:coap2mqtt "$STATE"

# 6. The command technicians type, and the unit.
mkdir -p "$(dirname "$BIN")"
cat > "$BIN.tmp" <<EOF
#!/bin/sh
# coap2mqtt as installed by systemd/install.sh: the program in /opt/coap2mqtt, with the configuration
# /etc/coap2mqtt/config.json5 unless --config FILE or COAP2MQTT_CONFIG says otherwise.
set -eu
self=\$(readlink -f "\$0")
# Normally empty; DIR when installed with --root DIR.
root=\${self%/usr/local/bin/*}
[ "\$root" != "\$self" ] || root=
: "\${COAP2MQTT_CONFIG:=\$root/etc/coap2mqtt/config.json5}"
export COAP2MQTT_CONFIG
command=run
skip=
for arg in "\$@"; do
  if [ -n "\$skip" ]; then skip=; continue; fi
  case "\$arg" in
    -c | --config) skip=1 ;;
    -h | --help | -v | --version) command=help; break ;;
    -*) ;;
    *) command=\$arg; break ;;
  esac
done
case "\$command" in
  run)
    # A gateway run by root would leave root-owned files in /var/lib/coap2mqtt that the service cannot open.
    if [ "\$(id -u)" -eq 0 ] && [ "\${COAP2MQTT_ALLOW_ROOT:-}" != 1 ]; then
      echo "coap2mqtt: not starting the gateway as root; the service runs it as user coap2mqtt:" >&2
      echo "  sudo systemctl start coap2mqtt; journalctl -u coap2mqtt -f" >&2
      echo "  in the foreground: sudo systemctl stop coap2mqtt && sudo -u coap2mqtt coap2mqtt" >&2
      exit 2
    fi
    ;;
esac
exec "$NODE" --max-semi-space-size=4 "\$root/opt/coap2mqtt/dist/cli.js" "\$@"
EOF
chmod 0755 "$BIN.tmp"
mv "$BIN.tmp" "$BIN"

mkdir -p "$(dirname "$UNIT")"
sed "s#^ExecStart=/usr/bin/node #ExecStart=$NODE #" "$PREFIX/systemd/coap2mqtt.service" > "$UNIT.tmp"
chmod 0644 "$UNIT.tmp"
mv "$UNIT.tmp" "$UNIT"
if [ -e "$ROOT/etc/systemd/system/coap2mqtt.service" ]; then
  say "warning: $ROOT/etc/systemd/system/coap2mqtt.service overrides the installed unit $UNIT; remove it unless you mean it (drop-ins: systemctl edit coap2mqtt)"
fi

# 7. The configuration's verdict, with the installed program.
say "checking the configuration: coap2mqtt check-config"
CONFIG_OK=1
"$BIN" check-config 2>&1 | sed 's/^/    /' || CONFIG_OK=0

# 8. systemd, when it runs this box.
STATUS=0
if [ "$SYSTEM" = 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$CONFIG_OK" = 0 ]; then
    say "not starting: fix $ETC/config.json5 (errors above), then: sudo systemctl enable --now coap2mqtt"
    STATUS=1
  elif [ "$START" = 0 ]; then
    say "--no-start: the service was not enabled, started or restarted (sudo systemctl enable --now coap2mqtt)"
  elif [ "$UPGRADE" = 1 ]; then
    # Running (or starting, or waiting to restart): restart it on the new version; stopped: leave it so.
    if [ "$(systemctl show -p ActiveState --value coap2mqtt)" != inactive ] && [ "$(systemctl show -p ActiveState --value coap2mqtt)" != failed ]; then
      systemctl restart coap2mqtt
      say "restarted coap2mqtt with $VERSION: systemctl status coap2mqtt"
    else
      say "the service was not running, and was left so (sudo systemctl start coap2mqtt)"
    fi
  elif grep -q 'REPLACE_WITH_' "$ETC/config.json5"; then
    systemctl enable coap2mqtt
    say "enabled, not started: $ETC/config.json5 still has placeholders (REPLACE_WITH_...)."
    say "  Edit it, check it with \"sudo coap2mqtt check-config\", then: sudo systemctl start coap2mqtt"
  else
    systemctl enable --now coap2mqtt
    say "enabled and started: systemctl status coap2mqtt; journalctl -u coap2mqtt -f"
  fi
elif [ "$SYSTEM" = 1 ]; then
  say "systemd is not running on this machine (no /run/systemd/system): nothing enabled or started."
  say "  On the gateway: sudo systemctl daemon-reload && sudo systemctl enable --now coap2mqtt"
else
  say "installed under $ROOT (no user, ownership or systemctl changes with --root)"
fi
if [ "$NEW_CONFIG" = 1 ] && [ "$SYSTEM" = 1 ]; then
  say "next: sudo nano $ETC/config.json5 (or: sudo coap2mqtt devices add NAME --type TYPE)"
fi
exit "$STATUS"
