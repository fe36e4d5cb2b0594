#!/usr/bin/env bash
# test.sh is lmbridge's test command: it installs the real homeservers the end-to-end tests need (Dendrite and
# Synapse, see install-homeservers.sh) and PostgreSQL from Debian's packages (install-postgres.sh: the tests start
# throwaway servers of it on loopback and run lmbridge on PostgreSQL as well as SQLite), then checks formatting, runs
# go vet and staticcheck, and runs every test with the homeservers and PostgreSQL required. Every step runs even when
# an earlier one failed; the summary lists them all, and the exit status is non-zero if any failed.
#
# Usage: scripts/test.sh [go test arguments]   (default: ./...)
# Environment: LMBRIDGE_CACHE (install location), LMBRIDGE_TEST_REQUIRE_HOMESERVERS (default 1; 0 skips tests whose
# homeserver or PostgreSQL is missing), LMBRIDGE_SKIP_SYNAPSE=1 (do not install Synapse, e.g. without root),
# LMBRIDGE_CHAOS (e2e's chaos test: short by default, full, or off) and LMBRIDGE_CHAOS_SEED (repeat a chaos schedule).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH=/usr/local/go/bin:$PATH

started=$(date +%s)
summary=()
failed=0

step() {
	local name=$1 t0 rc
	shift
	printf '\n==> %s\n' "$name"
	t0=$(date +%s)
	"$@"
	rc=$?
	if [ $rc -eq 0 ]; then
		summary+=("ok    $name ($(($(date +%s) - t0))s)")
	else
		summary+=("FAIL  $name ($(($(date +%s) - t0))s, exit $rc)")
		failed=1
	fi
	return $rc
}

print_summary() {
	printf '\n==> summary (%ss in all)\n' "$(($(date +%s) - started))"
	printf '  %s\n' "${summary[@]}"
}

install_homeservers() {
	local exports
	exports=$(scripts/install-homeservers.sh) || return
	eval "$exports"
	printf '%s\n' "$exports"
}

install_postgres() {
	local exports
	exports=$(scripts/install-postgres.sh) || return
	eval "$exports"
	printf '%s\n' "$exports"
}

check_gofmt() {
	local files unformatted
	files=$(git ls-files -co --exclude-standard -- '*.go' 2>/dev/null) ||
		files=$(find . -name '*.go' -not -path './.git/*' -not -path './.cache/*')
	[ -n "$files" ] || return 0
	# shellcheck disable=SC2086 # the file list is split on purpose; Go file names here have no spaces
	unformatted=$(gofmt -l $files) || return
	if [ -n "$unformatted" ]; then
		echo "these files are not gofmt-formatted (run gofmt -w on them):"
		printf '  %s\n' $unformatted
		return 1
	fi
}

# mattn/go-sqlite3 needs a C compiler (without one, Go builds with cgo off and the driver fails at run time), and a
# bare Debian has none. debootstrap is installed by install-homeservers.sh.
install_c_compiler() {
	command -v gcc >/dev/null && return
	local sudo=()
	[ "$(id -u)" = 0 ] || sudo=(sudo)
	echo "installing gcc and libc6-dev with apt-get"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev >/dev/null
}

if ! command -v go >/dev/null; then
	echo "Go is not installed: lmbridge needs Go 1.26 (https://go.dev/dl/), in /usr/local/go or on PATH" >&2
	exit 1
fi
go version
if ! step "C compiler for the SQLite driver" install_c_compiler || ! step "install homeservers" install_homeservers ||
	! step "install PostgreSQL" install_postgres; then
	print_summary
	echo "the prerequisites could not be installed; not running the tests" >&2
	exit 1
fi
export LMBRIDGE_TEST_REQUIRE_HOMESERVERS=${LMBRIDGE_TEST_REQUIRE_HOMESERVERS:-1}

# Silent, so the later steps do not print a "go: downloading" line per module.
step "go mod download" go mod download

# ts-mls, the independent MLS implementation mls/interop's tests run against, from its lock file. Without npm the
# step is skipped, and the interop tests then fail (LMBRIDGE_TEST_REQUIRE_TSMLS=0 skips them instead).
install_tsmls() {
	if ! command -v npm >/dev/null; then
		echo "npm is not installed: the ts-mls interop tests will fail (install Node 20 with npm)"
		return 0
	fi
	npm ci --prefix mls/interop/tsmls --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
}
step "npm ci (ts-mls for mls/interop)" install_tsmls
export LMBRIDGE_TEST_REQUIRE_TSMLS=${LMBRIDGE_TEST_REQUIRE_TSMLS:-1}
# matrix-js-sdk with its Rust crypto (WASM), the Matrix client of the encryption end-to-end tests (e2e/jsclient).
install_jsclient() {
	if ! command -v npm >/dev/null; then
		echo "npm is not installed: the encryption end-to-end tests will fail (install Node 20 with npm)"
		return 0
	fi
	npm ci --prefix e2e/jsclient --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
}
step "npm ci (matrix-js-sdk for e2e/jsclient)" install_jsclient
export LMBRIDGE_TEST_REQUIRE_JSCLIENT=${LMBRIDGE_TEST_REQUIRE_JSCLIENT:-1}
step "gofmt" check_gofmt
# goolm is mautrix's pure-Go Olm, which end-to-bridge encryption (matrixcrypto) needs; without the tag mautrix's
# crypto would link libolm, so the build without it (vetted too) has a stub that refuses encryption.allow.
step "go vet ./..." go vet ./...
step "go vet -tags goolm ./..." go vet -tags goolm ./...
step "staticcheck -tags goolm ./..." go tool staticcheck -tags goolm ./...
if [ $# -eq 0 ]; then
	set -- ./...
fi
step "go test -tags goolm -count=1 -timeout 60m $*" go test -tags goolm -count=1 -timeout 60m "$@"

print_summary
exit $failed
