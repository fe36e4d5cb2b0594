#!/usr/bin/env bash
# demo.sh is lmbridge's main job on a fresh machine: it builds Dendrite (through scripts/install-homeservers.sh) and
# lmbridge, then starts a local stack on loopback (Dendrite with lmbridge registered, lmbridge running, a demo user
# with a password) and prints what a Matrix client needs. Ctrl-C stops everything.
#
# Usage: scripts/demo.sh [-check] [-mimi] [-user NAME]
#   -check       set the stack up, check it (log-in, the bot joins a room), stop it and exit; for CI
#   -mimi        talk to the user of a second MIMI provider instead of a second LM server
# Environment:
#   LMBRIDGE_CACHE             where binaries and the demo's data go (default $HOME/.cache/lmbridge)
#   LMBRIDGE_DEMO_HOMESERVER   dendrite (default) or synapse (builds the Synapse chroot; needs root)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${LMBRIDGE_CACHE:-$HOME/.cache/lmbridge}
homeserver=${LMBRIDGE_DEMO_HOMESERVER:-dendrite}
export PATH=/usr/local/go/bin:$PATH

log() { printf '[demo %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if ! command -v go >/dev/null; then
	log "Go is not installed: lmbridge needs Go 1.26 (https://go.dev/dl/), in /usr/local/go or on PATH"
	exit 1
fi
# mattn/go-sqlite3 needs a C compiler; a bare Debian has none.
if ! command -v gcc >/dev/null; then
	log "installing gcc and libc6-dev for the SQLite driver"
	if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev >&2
fi
case $homeserver in
dendrite) export LMBRIDGE_SKIP_SYNAPSE=1 ;;
synapse) ;;
*)
	log "LMBRIDGE_DEMO_HOMESERVER must be dendrite or synapse, not $homeserver"
	exit 2
	;;
esac

# install-homeservers.sh prints export lines (LMBRIDGE_TEST_DENDRITE_BIN, ...) on stdout and progress on stderr.
exports=$(LMBRIDGE_CACHE=$cache "$repo/scripts/install-homeservers.sh")
eval "$exports"

log "building lmbridge and the demo program into $cache/bin (minutes the first time: the SQLite driver is C)"
mkdir -p "$cache/bin"
(cd "$repo" && go build -o "$cache/bin/" ./cmd/lmbridge ./cmd/lmbridge-demo)

# exec, so that Ctrl-C goes straight to the demo program, which stops lmbridge and the homeserver by PID.
exec "$cache/bin/lmbridge-demo" -lmbridge "$cache/bin/lmbridge" -dir "$cache/demo" -homeserver "$homeserver" "$@"
