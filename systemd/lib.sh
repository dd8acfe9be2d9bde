# Shared by install.sh and pack.sh (sourced, not run): what of a checkout or an unpacked release makes up
# the installed program, and the checks that it will run with this box's Node.js.

# Node.js majors the gateway is tested on (LTS lines).
SUPPORTED_NODE_MAJORS="20 22"
# Written into a release tarball by pack.sh: "node_major arch", the Node.js its native parts were built for.
PACKED_MARKER=.coap2mqtt-packed

say() { printf '%s\n' "$*"; }
fail() {
  printf 'coap2mqtt: %s\n' "$*" >&2
  exit 1
}

node_help() {
  cat >&2 <<'EOF'
Install Node.js 20 or 22 (LTS) system-wide, e.g. from NodeSource:
    curl -fsSL https://deb.nodesource.com/setup_22.x | sudo -E bash - && sudo apt-get install -y nodejs
or the binaries from https://nodejs.org/ unpacked under /usr/local. (Debian 12 / Raspberry Pi OS
bookworm ship Node.js 18 in "apt install nodejs": too old.) Then run this script again.
EOF
}

# Sets NODE (the command to put in the unit and the wrapper) and NODE_MAJOR; fails with what to install.
find_node() {
  NODE=$(command -v node || true)
  if [ -z "$NODE" ]; then
    printf 'coap2mqtt: Node.js (node) is not installed or not on PATH.\n' >&2
    node_help
    exit 1
  fi
  NODE_MAJOR=$("$NODE" -p 'process.versions.node.split(".")[0]')
  local version
  version=$("$NODE" --version)
  if [ "$NODE_MAJOR" -lt 20 ]; then
    printf 'coap2mqtt: %s is Node.js %s; coap2mqtt needs 20 or newer (supported: %s).\n' "$NODE" "$version" "$SUPPORTED_NODE_MAJORS" >&2
    node_help
    exit 1
  fi
  case " $SUPPORTED_NODE_MAJORS " in
    *" $NODE_MAJOR "*) say "Node.js $version at $NODE" ;;
    *) say "warning: Node.js $version at $NODE is not one coap2mqtt is tested on (supported: $SUPPORTED_NODE_MAJORS LTS); continuing" ;;
  esac
  # The service cannot see home directories (ProtectHome=yes): an nvm-installed node would not start.
  case "$(readlink -f "$NODE")" in
    /home/* | /root/*)
      fail "$NODE is inside a home directory (nvm?), which the service cannot reach (ProtectHome=yes): install Node.js system-wide (see the README)"
      ;;
  esac
}

# copy_program SRC DEST: the runtime files of a checkout (after npm ci) or of an unpacked release into DEST
# (which must not exist): dist, production node_modules (native builds kept, their build leftovers not),
# build/Release/*.node, package.json, config, systemd, README.
copy_program() {
  local src=$1 dest=$2 dir
  [ -f "$src/dist/cli.js" ] || fail "$src/dist/cli.js is missing: run \"npm ci\" in $src first (it compiles the program and the native bindings)"
  [ -f "$src/build/Release/sd_notify.node" ] || fail "$src/build/Release/sd_notify.node is missing: run \"npm ci\" (or \"npm rebuild\") in $src first; it needs python3, make and g++"
  [ -d "$src/node_modules" ] || fail "$src/node_modules is missing: run \"npm ci\" in $src first"
  mkdir -p "$dest/build/Release"
  cp -a "$src/dist" "$src/package.json" "$src/config" "$src/systemd" "$dest/"
  for file in README.md LICENSE "$PACKED_MARKER"; do
    if [ -e "$src/$file" ]; then cp -a "$src/$file" "$dest/"; fi
  done
  cp -a "$src"/build/Release/*.node "$dest/build/Release/"
  mkdir -p "$dest/node_modules"
  if [ -f "$src/$PACKED_MARKER" ]; then
    # A release: node_modules holds production dependencies only already.
    cp -a "$src/node_modules/." "$dest/node_modules/"
  else
    # A checkout: only what the program needs at run time, not the compiler and test tools.
    command -v npm > /dev/null || fail "npm is needed to install from a checkout (or install from a release tarball made by systemd/pack.sh)"
    local list
    list=$(cd "$src" && npm ls --omit=dev --parseable --all 2> /dev/null || true)
    [ -n "$list" ] || fail "\"npm ls --omit=dev\" listed nothing in $src: run \"npm ci\" there first"
    printf '%s\n' "$list" | while IFS= read -r dir; do
      case "$dir" in
        "$src"/node_modules/*/node_modules/*) ;; # inside a package copied whole
        "$src"/node_modules/@*/*)
          mkdir -p "$dest/node_modules/$(basename "$(dirname "$dir")")"
          cp -a "$dir" "$dest/node_modules/$(basename "$(dirname "$dir")")/"
          ;;
        "$src"/node_modules/*) cp -a "$dir" "$dest/node_modules/" ;;
      esac
    done
  fi
  # Native dependencies (better-sqlite3): keep the compiled .node files, drop objects and sources.
  find "$dest/node_modules" -type d -path '*/build/Release' | while IFS= read -r dir; do
    find "$(dirname "$dir")" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
    find "$dir" -mindepth 1 -maxdepth 1 ! -name '*.node' -exec rm -rf {} +
  done
  rm -rf "$dest/node_modules/better-sqlite3/deps" "$dest/node_modules/better-sqlite3/src"
}

# check_program DIR: this box's node can load DIR's native parts (they are built per architecture and, for
# better-sqlite3, per Node.js major). Fails with what to do; a DTLS binding that cannot load only warns.
check_program() {
  local dir=$1 packed
  if [ -f "$dir/$PACKED_MARKER" ]; then
    packed=$(cat "$dir/$PACKED_MARKER")
    local want="$NODE_MAJOR $("$NODE" -p process.arch)"
    [ "${packed%% *}" = "${want%% *}" ] && [ "$(printf '%s' "$packed" | cut -d' ' -f2)" = "${want#* }" ] ||
      fail "this release was built for Node.js ${packed%% *} on $(printf '%s' "$packed" | cut -d' ' -f2); this box has Node.js $NODE_MAJOR on ${want#* }: use the tarball for node$NODE_MAJOR-linux-${want#* } (systemd/pack.sh on such a machine), or install from a checkout"
  fi
  local errors
  if ! errors=$("$NODE" -e '
    const dir = process.argv[1];
    require(dir + "/build/Release/sd_notify.node");
    const Database = require(dir + "/node_modules/better-sqlite3");
    new Database(":memory:").close();
  ' "$dir" 2>&1); then
    printf '%s\n' "$errors" | sed 's/^/    /' >&2
    fail "the native parts in $dir do not load with this Node.js ($("$NODE" --version)): run \"npm rebuild\" in the checkout after a Node.js upgrade, or use a release built for this Node.js and architecture"
  fi
  if ! "$NODE" -e 'require(process.argv[1] + "/build/Release/coap2mqtt_dtls.node")' "$dir" 2> /dev/null; then
    say "warning: the DTLS binding (build/Release/coap2mqtt_dtls.node) does not load here; plain CoAP works, dtls.enabled will not (see \"Building the DTLS binding\" in the README)"
  fi
}
