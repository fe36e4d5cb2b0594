#!/bin/sh
# The image's entry point: the mautrix bridges' first-run flow. Without a config it writes the example and stops so it
# can be edited; without a registration it writes one and stops so it can be given to the homeserver; otherwise it
# runs the bridge. lmbridge's own messages say what to do next.
set -e
# Overridable so the script can be tried outside the image.
bin=${LMBRIDGE_BIN:-/usr/bin/lmbridge}
data=${LMBRIDGE_DATA:-/data}
cd "$data"

if [ ! -f "$data"/config.yaml ]; then
	"$bin" -e -c "$data"/config.yaml
	echo "Edit $data/config.yaml (in a container set appservice.hostname to 0.0.0.0 and appservice.address to the"
	echo "address the homeserver reaches this container at), then start the container again."
	exit 0
fi

if [ ! -f "$data"/registration.yaml ]; then
	"$bin" -g -c "$data"/config.yaml -r "$data"/registration.yaml
	echo "Give $data/registration.yaml to the homeserver, restart the homeserver, then start this container again."
	exit 0
fi

exec "$bin" -c "$data"/config.yaml -r "$data"/registration.yaml
