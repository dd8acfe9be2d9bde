#!/usr/bin/env bash
# Makes a release tarball for boxes without internet access:
#   coap2mqtt-<version>-linux-<arch>-node<major>.tar.gz
# holding the compiled program, production node_modules (with their compiled .node files), the native
# bindings, package.json, config/ and systemd/. Native code is built for one architecture and (better-sqlite3)
# one Node.js major: run this on a machine like the target boxes (say, one Raspberry Pi with internet and the
# same Node.js major), then on each box:
#   tar xzf coap2mqtt-...tar.gz && sudo coap2mqtt-<version>/systemd/install.sh
#
#   systemd/pack.sh [--out DIR]                 npm ci in a clean copy of this checkout, then npm prune --omit=dev
#   systemd/pack.sh --reuse-node-modules ...    package this checkout's node_modules and build as they are
#                                               (quicker; only right after "npm ci" here)
set -euo pipefail
umask 022

SRC=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=systemd/lib.sh
. "$SRC/systemd/lib.sh"

OUT=$PWD
REUSE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      [ $# -ge 2 ] || fail "--out needs a directory"
      OUT=$2
      shift 2
      ;;
    --reuse-node-modules)
      REUSE=1
      shift
      ;;
    -h | --help)
      sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      fail "unknown option $1 (pack.sh --help)"
      ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

find_node
command -v npm > /dev/null || fail "npm is needed to make a release"
VERSION=$("$NODE" -p 'require(process.argv[1]).version' "$SRC/package.json")
ARCH=$("$NODE" -p process.arch)
NAME=coap2mqtt-$VERSION
TARBALL=$OUT/$NAME-linux-$ARCH-node$NODE_MAJOR.tar.gz

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT

BUILT=$SRC
if [ "$REUSE" = 0 ]; then
  say "building in a clean copy: npm ci (compiles the native bindings and the program), then npm prune --omit=dev"
  mkdir -p "$STAGE/build-tree"
  for item in package.json package-lock.json binding.gyp tsconfig.json src native config systemd README.md LICENSE; do
    if [ -e "$SRC/$item" ]; then cp -a "$SRC/$item" "$STAGE/build-tree/"; fi
  done
  (cd "$STAGE/build-tree" && npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund)
  BUILT=$STAGE/build-tree
fi

copy_program "$BUILT" "$STAGE/$NAME"
printf '%s %s\n' "$NODE_MAJOR" "$ARCH" > "$STAGE/$NAME/$PACKED_MARKER"
check_program "$STAGE/$NAME"

tar -C "$STAGE" -czf "$TARBALL.tmp" "$NAME"
mv "$TARBALL.tmp" "$TARBALL"
say "wrote $TARBALL ($(du -h "$TARBALL" | cut -f1)): for Node.js $NODE_MAJOR on linux-$ARCH"
say "  on the box: tar xzf $(basename "$TARBALL") && sudo $NAME/systemd/install.sh"
