# as-root.sh defines as_root, sourced by the install scripts: it runs a command as root, through sudo when the script
# is not root already, and fails with a message (through the sourcing script's log) when neither is possible.
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null; then
		sudo "$@"
	else
		log "need root (or sudo) to run: $*"
		return 1
	fi
}
