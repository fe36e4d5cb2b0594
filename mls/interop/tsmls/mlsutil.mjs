// Shared pieces of the ts-mls harness and benchmark: ciphersuite lookup, hex, and the MLSMessage wire encodings
// (RFC 9420 §6) that carry every value across to Go byte for byte.
import {
  ciphersuites,
  decodeMlsMessage,
  defaultLifetime,
  encodeMlsMessage,
  generateKeyPackage,
  generateKeyPackageWithKey,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
} from "ts-mls";
import { createGroupInfo } from "ts-mls/createCommit.js";
import { makeKeyPackageRef } from "ts-mls/keyPackage.js";
import { decodeRatchetTree, encodeRatchetTree } from "ts-mls/ratchetTree.js";
import { greaseValues } from "ts-mls/grease.js";

const implCache = new Map();

// suiteName maps an RFC 9420 ciphersuite number to ts-mls's name for it.
export function suiteName(id) {
  const n = Number(id);
  for (const [name, value] of Object.entries(ciphersuites)) {
    if (value === n) return name;
  }
  throw new Error(`unknown ciphersuite ${id}`);
}

export function suiteId(name) {
  const id = ciphersuites[name];
  if (id === undefined) throw new Error(`unknown ciphersuite name ${name}`);
  return id;
}

// impl returns the ts-mls CiphersuiteImpl for a suite number; it loads the optional peer packages the suite needs on
// first use, so a missing peer shows up as an error on the request that needed it.
export async function impl(id) {
  const name = suiteName(id);
  let p = implCache.get(name);
  if (p === undefined) {
    p = getCiphersuiteImpl(getCiphersuiteFromName(name));
    implCache.set(name, p);
    p.catch(() => implCache.delete(name));
  }
  return p;
}

export function toHex(b) {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

export function fromHex(s, what) {
  if (typeof s !== "string" || s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) {
    throw new Error(`${what}: want an even-length hex string`);
  }
  return new Uint8Array(Buffer.from(s, "hex"));
}

// decodeMessage decodes MLSMessage bytes, requiring the whole input to be consumed and the wire format to be one of
// want (when given).
export function decodeMessage(hex, what, ...want) {
  const b = fromHex(hex, what);
  const r = decodeMlsMessage(b, 0);
  if (r === undefined) throw new Error(`${what}: not a decodable MLSMessage`);
  const [msg, off] = r;
  if (off !== b.length) throw new Error(`${what}: ${b.length - off} trailing bytes after the MLSMessage`);
  if (want.length > 0 && !want.includes(msg.wireformat)) {
    throw new Error(`${what}: wire format is ${msg.wireformat}, want ${want.join(" or ")}`);
  }
  return msg;
}

export function encodeKeyPackageMsg(keyPackage) {
  return toHex(encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage }));
}

export function encodeWelcomeMsg(welcome) {
  return toHex(encodeMlsMessage({ version: "mls10", wireformat: "mls_welcome", welcome }));
}

export function encodeGroupInfoMsg(groupInfo) {
  return toHex(encodeMlsMessage({ version: "mls10", wireformat: "mls_group_info", groupInfo }));
}

export function encodePublicMsg(publicMessage) {
  return toHex(encodeMlsMessage({ version: "mls10", wireformat: "mls_public_message", publicMessage }));
}

export function encodePrivateMsg(privateMessage) {
  return toHex(encodeMlsMessage({ version: "mls10", wireformat: "mls_private_message", privateMessage }));
}

export function encodeMsg(msg) {
  return toHex(encodeMlsMessage(msg));
}

export function encodeTree(tree) {
  return toHex(encodeRatchetTree(tree));
}

export function decodeTree(hex, what) {
  const b = fromHex(hex, what);
  const r = decodeRatchetTree(b, 0);
  if (r === undefined) throw new Error(`${what}: not a decodable ratchet tree`);
  if (r[1] !== b.length) throw new Error(`${what}: ${b.length - r[1]} trailing bytes after the ratchet tree`);
  return r[0];
}

// capabilities builds a leaf's capabilities. Without grease they list exactly the real values (deterministic bytes);
// with grease every GREASE value of RFC 9420 §13.5 is added to each list, so a peer that fails to ignore them fails
// every time rather than one run in ten (ts-mls's own default adds each value with probability 0.1).
export function capabilities({ grease = false, extensions = [], proposals = [] } = {}) {
  const real = {
    versions: ["mls10"],
    ciphersuites: Object.keys(ciphersuites),
    extensions: [...extensions],
    proposals: [...proposals],
    credentials: ["basic", "x509"],
  };
  if (!grease) return real;
  return {
    versions: real.versions,
    // ts-mls carries unknown suite and credential numbers as their decimal strings.
    ciphersuites: [...real.ciphersuites, ...greaseValues.map(String)],
    extensions: [...real.extensions, ...greaseValues],
    proposals: [...real.proposals, ...greaseValues],
    credentials: [...real.credentials, ...greaseValues.map(String)],
  };
}

// ecdsaCurves maps the ECDSA suites to their curve in @noble/curves.
const ecdsaCurves = { 2: "p256", 5: "p521", 7: "p384" };

// newKeyPackage generates a KeyPackage with a basic credential and returns it with its private keys and its ref.
//
// For the ECDSA suites (2, 5, 7) ts-mls 1.6.4's own key generation publishes the signature key as a compressed SEC1
// point (noble's default), where RFC 9420 §5.1.1 wants the uncompressed point (TLS's UncompressedPointRepresentation;
// the test vectors use it too). So the harness makes the key pair itself and hands ts-mls the uncompressed point, which
// ts-mls accepts; compressedEcdsa keeps ts-mls's own encoding, to see how a peer copes with it.
//
// lifetime defaults to ts-mls's: from 0 to 2^63-1 seconds, which a peer enforcing a maximum lifetime refuses.
export async function newKeyPackage(suite, identity, caps, { compressedEcdsa = false, lifetime = defaultLifetime } = {}) {
  const cs = await impl(suite);
  const credential = { credentialType: "basic", identity };
  const curve = ecdsaCurves[Number(suite)];
  let pkg;
  if (curve !== undefined && !compressedEcdsa) {
    const nist = await import("@noble/curves/nist.js");
    const signKey = nist[curve].utils.randomSecretKey();
    const publicKey = nist[curve].getPublicKey(signKey, false);
    pkg = await generateKeyPackageWithKey(credential, caps ?? capabilities(), lifetime, [], { signKey, publicKey }, cs);
  } else {
    pkg = await generateKeyPackage(credential, caps ?? capabilities(), lifetime, [], cs);
  }
  const { publicPackage, privatePackage } = pkg;
  const ref = await makeKeyPackageRef(publicPackage, cs.hash);
  return { publicPackage, privatePackage, ref, suite: Number(suite) };
}

export function zero(consumed) {
  for (const b of consumed ?? []) b.fill(0);
}

// RFC 9420 §12.4.3.2: external_pub's extension_data is an ExternalPub, a struct whose one field is an opaque<V>
// HPKEPublicKey, so the key is length-prefixed inside the extension's own opaque<V>. ts-mls 1.6.4 writes the bare key
// and reads only that (fixed after 1.6.4 by ts-mls's pull request 449), so a peer that follows the RFC cannot join
// externally from its GroupInfo, nor ts-mls from the peer's. The harness therefore makes GroupInfos itself with the
// RFC's encoding (tsmlsExternalPub keeps ts-mls's), and hands ts-mls the bare key when it joins from an RFC one.

function varint(n) {
  if (n < 1 << 6) return Uint8Array.of(n);
  if (n < 1 << 14) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
  return Uint8Array.of(0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

// HPKE public key lengths of suites 1 to 7: X25519, X448, and uncompressed P-256, P-384 and P-521 points.
const hpkeKeyLengths = new Set([32, 56, 65, 97, 133]);

// rfcExternalPubKey returns the key inside external_pub data in the RFC's encoding, or undefined when the data is not
// in it (a bare key never parses as one: its length is a key length, a prefixed key's is one or two more).
function rfcExternalPubKey(data) {
  if (data.length === 0) return undefined;
  const prefix = 1 << (data[0] >> 6);
  if (prefix > 4 || data.length < prefix) return undefined;
  let n = data[0] & 0x3f;
  for (let i = 1; i < prefix; i++) n = n * 256 + data[i];
  if (prefix + n !== data.length || !hpkeKeyLengths.has(n)) return undefined;
  return data.subarray(prefix);
}

// makeGroupInfo signs a GroupInfo of the state's epoch with external_pub (in the RFC's encoding unless
// tsmlsExternalPub) and, when tree, the ratchet_tree extension: ts-mls's createGroupInfoWithExternalPub with the
// RFC's ExternalPub.
export async function makeGroupInfo(state, cs, { tree = true, tsmlsExternalPub = false } = {}) {
  const pair = await cs.hpke.deriveKeyPair(state.keySchedule.externalSecret);
  const key = await cs.hpke.exportPublicKey(pair.publicKey);
  const data = tsmlsExternalPub ? key : new Uint8Array([...varint(key.length), ...key]);
  const extensions = [{ extensionType: "external_pub", extensionData: data }];
  if (tree) extensions.push({ extensionType: "ratchet_tree", extensionData: encodeRatchetTree(state.ratchetTree) });
  return createGroupInfo(state.groupContext, state.confirmationTag, state, extensions, cs);
}

// externalPubImpl returns cs for ts-mls's joinGroupExternal from groupInfo: when the GroupInfo's external_pub is in
// the RFC's encoding, importing exactly that data as a public key imports the key inside it. The GroupInfo itself is
// left as it is, so its signature is checked over the bytes that were signed.
export function externalPubImpl(cs, groupInfo) {
  const ext = groupInfo.extensions.find((e) => e.extensionType === "external_pub");
  const key = ext === undefined ? undefined : rfcExternalPubKey(ext.extensionData);
  if (key === undefined) return cs;
  const same = (k) => k.length === ext.extensionData.length && k.every((b, i) => b === ext.extensionData[i]);
  return { ...cs, hpke: { ...cs.hpke, importPublicKey: (k) => cs.hpke.importPublicKey(same(k) ? key : k) } };
}
