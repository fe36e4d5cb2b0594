# Makes synapse_xmatrix.json: X-Matrix request signatures made the way Synapse makes them
# (synapse/http/matrixfederationclient.py, build_auth_headers: sign_json over {method, uri, origin, destination,
# content}), with Synapse's own libraries (signedjson, canonicaljson, PyNaCl). Run it with the Python of the Synapse
# that scripts/install-homeservers.sh installs:
#   chroot ~/.cache/lmbridge/synapse-root /usr/bin/python3 - < synapse_xmatrix.py > synapse_xmatrix.json
import json
import sys

import canonicaljson
import signedjson
from signedjson.key import decode_signing_key_base64
from signedjson.sign import sign_json

# The Matrix specification's test seed (appendices, "Signing JSON").
SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
key = decode_signing_key_base64("ed25519", "1", SEED)

contents = [
    None,
    {"pdus": [], "edus": []},
    # Control characters: canonical JSON writes \u00xx in lower case.
    {"body": "unit\x1fseparator \x0b vertical tab \x00 nul \x7f del", "tab\t": "\u2028\u2029<&>"},
    # Non-ASCII, keys in code-point order, nesting.
    {"日": 1, "本": [True, False, None, {"z": -9007199254740991, "a": 9007199254740991}], "é": "日本語", "": {}},
    # A float and an integer beyond 2^53: canonical JSON forbids both; a signer writes them as it sends them.
    {"f": 1.5, "big": 12345678901234567890, "s": "x\x1f"},
]
cases = []
for content in contents:
    request = {
        "method": "PUT",
        "uri": "/_matrix/federation/v1/send/1700000000000",
        "origin": "synapse.test",
        "destination": "lm.test",
    }
    if content is not None:
        request["content"] = content
    signed = sign_json(dict(request), "synapse.test", key)
    cases.append({
        "content": None if content is None else json.dumps(content, ensure_ascii=False, separators=(",", ":")),
        "canonical": canonicaljson.encode_canonical_json(request).decode("utf-8"),
        "signature": signed["signatures"]["synapse.test"]["ed25519:1"],
    })
json.dump({
    "made_with": "signedjson %s, canonicaljson %s, Python %s" % (
        getattr(signedjson, "__version__", "?"), canonicaljson.__version__, sys.version.split()[0]),
    "seed": SEED, "key_id": "ed25519:1", "origin": "synapse.test", "destination": "lm.test",
    "method": "PUT", "uri": "/_matrix/federation/v1/send/1700000000000", "cases": cases,
}, sys.stdout, ensure_ascii=False, indent=1)
print()
