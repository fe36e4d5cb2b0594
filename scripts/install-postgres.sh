#!/usr/bin/env bash
# install-postgres.sh installs PostgreSQL from Debian's packages (postgresql-15 on Debian 12, or whatever major
# version the machine's archive carries) for the tests that run lmbridge on PostgreSQL. The tests start their own
# throwaway servers (internal/testpg): a fresh data directory, 127.0.0.1 only, run as the postgres OS user, stopped by
# PID; the cluster the package sets up is not used, and is not started here.
# It is idempotent: an installed PostgreSQL is kept. Progress goes to stderr; stdout carries only the `export` line
# for the test run, so callers can `eval "$(scripts/install-postgres.sh)"`.
set -euo pipefail

log() { printf '[install-postgres %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
# shellcheck source=scripts/as-root.sh
. "$(dirname "${BASH_SOURCE[0]}")/as-root.sh"

# The newest installed server binaries, e.g. /usr/lib/postgresql/15/bin.
find_bin() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
			echo "$d"
			return
		fi
	done
	return 1
}

started=$(date +%s)
if bin=$(find_bin); then
	log "PostgreSQL: already installed in $bin"
else
	log "PostgreSQL: apt-get install postgresql (~20 s)"
	logfile=$(mktemp)
	# policy-rc.d keeps the package's postinst from starting the default cluster on port 5432: the tests do not use
	# it, and a server listening there would be left running.
	policy_added=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
		as_root chmod 755 /usr/sbin/policy-rc.d
		policy_added=1
	fi
	if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; } >"$logfile" 2>&1; then
		[ -z "$policy_added" ] || as_root rm -f /usr/sbin/policy-rc.d
		log "failed: apt-get install postgresql; last lines:"
		tail -n 40 "$logfile" >&2
		exit 1
	fi
	[ -z "$policy_added" ] || as_root rm -f /usr/sbin/policy-rc.d
	rm -f "$logfile"
	bin=$(find_bin) || {
		log "postgresql is installed but no initdb/postgres was found under /usr/lib/postgresql/*/bin"
		exit 1
	}
	log "PostgreSQL: $("$bin/postgres" --version) installed in $(($(date +%s) - started))s"
fi
# Servers run as the postgres OS user when the tests run as root; the package creates it.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
	log "the postgres OS user is missing; the tests run as root and need it to start PostgreSQL"
	exit 1
fi

echo "export LMBRIDGE_TEST_POSTGRES_BIN=$(printf '%q' "$bin")"
