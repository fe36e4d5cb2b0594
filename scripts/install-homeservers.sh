#!/usr/bin/env bash
# install-homeservers.sh installs the real homeservers lmbridge's end-to-end tests run against:
#   - Dendrite v0.13.8 (github.com/matrix-org/dendrite, Apache-2.0), built from the nested tools module tools/homeserver into $LMBRIDGE_CACHE/bin;
#   - Synapse from Debian sid, in a debootstrap chroot at $LMBRIDGE_CACHE/synapse-root (needs root; sudo otherwise).
# It is idempotent: what is already installed is kept. Progress goes to stderr; stdout carries only the
# `export` lines for the test run, so callers can `eval "$(scripts/install-homeservers.sh)"`.
#
# Environment:
#   LMBRIDGE_CACHE          where to install (default $HOME/.cache/lmbridge)
#   LMBRIDGE_SKIP_SYNAPSE=1 do not build the Synapse chroot (Dendrite only)
#   LMBRIDGE_DEBIAN_MIRROR  Debian mirror for debootstrap (default: the first Debian URI of the machine's apt sources)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${LMBRIDGE_CACHE:-$HOME/.cache/lmbridge}
bin=$cache/bin
root=$cache/synapse-root
# debootstrap and chroot live in /usr/sbin, which not every PATH has.
export PATH=/usr/local/go/bin:$PATH:/usr/sbin:/sbin

mkdir -p "$cache"
started=$(date +%s)
log() { printf '[install-homeservers %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=scripts/as-root.sh
. "$(dirname "${BASH_SOURCE[0]}")/as-root.sh"
elapsed() { echo "$(($(date +%s) - $1))s"; }

# quietly LOG CMD... runs CMD with its output in LOG, and shows the end of LOG only when CMD fails.
quietly() {
	local logfile=$1
	shift
	if ! "$@" >"$logfile" 2>&1; then
		log "failed: $*; last lines of $logfile:"
		tail -n 40 "$logfile" >&2
		return 1
	fi
}

# Dendrite: rebuild only when the pinned tools module changed (the stamp holds its go.mod/go.sum hash).
install_dendrite() {
	local t0 want
	t0=$(date +%s)
	want=$(cat "$repo/tools/homeserver/go.mod" "$repo/tools/homeserver/go.sum" | sha256sum | cut -d' ' -f1)
	if [ -x "$bin/dendrite" ] && [ -x "$bin/generate-keys" ] && [ -x "$bin/generate-config" ] &&
		[ "$(cat "$bin/.stamp" 2>/dev/null)" = "$want" ]; then
		log "Dendrite: already built in $bin"
		return
	fi
	log "Dendrite: building v0.13.8 from tools/homeserver into $bin (CGO_ENABLED=0, ~1.5 min on a fresh machine)"
	mkdir -p "$bin"
	# `go mod download` is silent, unlike the ~90 "go: downloading" lines the build would print.
	(cd "$repo/tools/homeserver" && go mod download)
	(cd "$repo/tools/homeserver" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$bin/" \
		github.com/matrix-org/dendrite/cmd/dendrite \
		github.com/matrix-org/dendrite/cmd/generate-keys \
		github.com/matrix-org/dendrite/cmd/generate-config)
	echo "$want" >"$bin/.stamp"
	log "Dendrite: built in $(elapsed "$t0")"
}

debian_mirror() {
	if [ -n "${LMBRIDGE_DEBIAN_MIRROR:-}" ]; then
		echo "$LMBRIDGE_DEBIAN_MIRROR"
		return
	fi
	local m
	# deb822 sources first (Debian 12's default), then the one-line format; skip the security archive.
	m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
	if [ -z "$m" ]; then
		m=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
			sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' | grep -v security | head -n1 || true)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

# Synapse: a minimal sid chroot with matrix-synapse installed by apt inside it. It is built in a temporary
# directory and renamed at the end, so an interrupted run never leaves a half-built root behind.
install_synapse() {
	local t0 mirror tmp
	t0=$(date +%s)
	if [ -f "$root/.lmbridge-installed" ]; then
		log "Synapse: already installed in $root ($(cat "$root/.lmbridge-installed"))"
		return
	fi
	if ! command -v debootstrap >/dev/null; then
		log "Synapse: installing debootstrap"
		quietly "$cache/apt-update.log" as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
		quietly "$cache/apt-debootstrap.log" as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
	fi
	mirror=$(debian_mirror)
	tmp=$root.tmp
	as_root rm -rf "$tmp"
	log "Synapse: debootstrap --variant=minbase sid $tmp $mirror (~30 s; output in $cache/debootstrap.log)"
	quietly "$cache/debootstrap.log" as_root debootstrap --variant=minbase sid "$tmp" "$mirror"
	# The mirror may serve an aged snapshot whose Release files are past Valid-Until.
	printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' |
		as_root tee "$tmp/etc/apt/apt.conf.d/99no-valid-until" >/dev/null
	# matrix-synapse's postinst would start a server on 8008 on all interfaces; policy-rc.d forbids it.
	printf '#!/bin/sh\nexit 101\n' | as_root tee "$tmp/usr/sbin/policy-rc.d" >/dev/null
	as_root chmod 755 "$tmp/usr/sbin/policy-rc.d"
	log "Synapse: apt-get install matrix-synapse inside the chroot (~30 s; output in $cache/apt-synapse.log)"
	quietly "$cache/apt-synapse.log" as_root chroot "$tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 sh -c \
		'apt-get update -q && apt-get install -y -q --no-install-recommends matrix-synapse && apt-get clean'
	local version
	version=$(as_root chroot "$tmp" dpkg-query -W -f='${Version}' matrix-synapse)
	as_root mkdir -p "$tmp/data"
	echo "matrix-synapse $version" | as_root tee "$tmp/.lmbridge-installed" >/dev/null
	as_root rm -rf "$root"
	as_root mv "$tmp" "$root"
	log "Synapse: matrix-synapse $version installed in $(elapsed "$t0")"
}

install_dendrite
if [ "${LMBRIDGE_SKIP_SYNAPSE:-}" = 1 ]; then
	log "Synapse: skipped (LMBRIDGE_SKIP_SYNAPSE=1)"
else
	install_synapse
fi
log "done in $(elapsed "$started")"

echo "export LMBRIDGE_TEST_DENDRITE_BIN=$(printf '%q' "$bin")"
if [ -f "$root/.lmbridge-installed" ]; then
	echo "export LMBRIDGE_TEST_SYNAPSE_ROOT=$(printf '%q' "$root")"
fi
