// harness.mjs drives ts-mls (an independent TypeScript RFC 9420 implementation) for lmbridge's interop tests: a
// long-running process that reads one JSON request per line on stdin and answers one JSON line per request on stdout,
// in request order. It holds any number of named clients; each client is one member of one group (use another name
// for another membership). Every MLS value crosses as hex of its exact RFC 9420 wire bytes (an MLSMessage, or a
// ratchet tree for the out-of-band tree), so the Go side can hand it to the Go library unchanged.
//
// Request:  {"id": 1, "op": "keypackage", "client": "bob", "suite": 1, "identity": "626f62"}
// Answer:   {"id": 1, "result": {...}}   or   {"id": 1, "error": "what failed"}
//
// A bad request is answered with an error and never ends the process; it ends when stdin closes. The operations are
// listed in README.md.
import { createInterface } from "node:readline";
import {
  createApplicationMessage,
  createCommit,
  createGroup,
  createProposal,
  joinGroup,
  joinGroupExternal,
  makePskIndex,
  mlsExporter,
  processPrivateMessage,
  processPublicMessage,
  acceptAll,
} from "ts-mls";
import {
  capabilities,
  decodeMessage,
  decodeTree,
  encodeGroupInfoMsg,
  encodeKeyPackageMsg,
  encodeMsg,
  encodePrivateMsg,
  encodePublicMsg,
  encodeTree,
  encodeWelcomeMsg,
  externalPubImpl,
  fromHex,
  impl,
  makeGroupInfo,
  newKeyPackage,
  suiteId,
  toHex,
  zero,
} from "./mlsutil.mjs";
import { runBench } from "./bench.mjs";

// Only answers go to stdout; anything a library prints goes to stderr so it cannot corrupt the protocol.
const out = process.stdout;
console.log = console.error;
console.info = console.error;
console.warn = console.error;

const clients = new Map();

function client(name, { create = false } = {}) {
  if (typeof name !== "string" || name === "") throw new Error("client: want a non-empty name");
  let c = clients.get(name);
  if (c === undefined) {
    if (!create) throw new Error(`client ${name}: no such client (make one with keypackage, create or externaljoin)`);
    c = { name, suite: undefined, keyPackages: [], state: undefined, pending: undefined, psks: {} };
    clients.set(name, c);
  }
  return c;
}

// member returns a client that is in a group. A client holding a pending commit may still send and process
// messages of its current epoch, but may not make another commit or proposal until it merges or discards it.
function member(name, { committing = false } = {}) {
  const c = client(name);
  if (c.state === undefined) throw new Error(`client ${name}: not in a group`);
  if (committing && c.pending !== undefined) throw new Error(`client ${name}: has a pending commit (merge or discard it first)`);
  return c;
}

function suiteOf(req, c) {
  const s = req.suite ?? c.suite;
  if (s === undefined) throw new Error("suite: missing");
  return Number(s);
}

function identityOf(req, c) {
  if (req.identity !== undefined) return fromHex(req.identity, "identity");
  return new TextEncoder().encode(c.name);
}

function keyOpts(req) {
  const opts = { compressedEcdsa: req.compressedEcdsa === true };
  if (req.lifetime !== undefined) {
    const { notBefore, notAfter } = req.lifetime ?? {};
    if (!Number.isInteger(notBefore) || !Number.isInteger(notAfter) || notBefore < 0 || notAfter < notBefore) {
      throw new Error('lifetime: want {"notBefore": seconds, "notAfter": seconds} with notBefore <= notAfter');
    }
    opts.lifetime = { notBefore: BigInt(notBefore), notAfter: BigInt(notAfter) };
  }
  return opts;
}

function capsOf(req) {
  return capabilities({
    grease: req.grease === true,
    extensions: (req.capExtensions ?? []).map(Number),
    proposals: (req.capProposals ?? []).map(Number),
  });
}

function extensionsOf(list, what) {
  return (list ?? []).map((e, i) => {
    if (typeof e !== "object" || e === null) throw new Error(`${what}[${i}]: want {"type": n, "data": hex}`);
    return { extensionType: Number(e.type), extensionData: fromHex(e.data ?? "", `${what}[${i}].data`) };
  });
}

// takeKeyPackage returns the client's oldest unused KeyPackage of the suite, or a new one.
async function takeKeyPackage(req, c, suite) {
  const i = c.keyPackages.findIndex((k) => k.suite === suite);
  if (i >= 0) return c.keyPackages.splice(i, 1)[0];
  return newKeyPackage(suite, identityOf(req, c), capsOf(req), keyOpts(req));
}

function pskIndex(c, state) {
  return makePskIndex(state, c.psks);
}

// hashSizes is each suite's KDF.Nh: SHA-256 for 1 to 3, SHA-512 for 4 to 6, SHA-384 for 7.
const hashSizes = { 1: 32, 2: 32, 3: 32, 4: 64, 5: 64, 6: 64, 7: 48 };

function proposalOf(p, i, c) {
  const what = `proposals[${i}]`;
  if (typeof p !== "object" || p === null) throw new Error(`${what}: want an object`);
  switch (p.type) {
    case "add": {
      const msg = decodeMessage(p.keyPackage, `${what}.keyPackage`, "mls_key_package");
      return { proposalType: "add", add: { keyPackage: msg.keyPackage } };
    }
    case "remove":
      if (!Number.isInteger(p.leaf) || p.leaf < 0) throw new Error(`${what}.leaf: want a leaf index`);
      return { proposalType: "remove", remove: { removed: p.leaf } };
    case "psk": {
      const pskId = fromHex(p.pskId, `${what}.pskId`);
      if (p.secret !== undefined) c.psks[Buffer.from(pskId).toString("base64")] = fromHex(p.secret, `${what}.secret`);
      // RFC 9420 §8.4: the nonce is KDF.Nh bytes long, which ts-mls does not check.
      const nonce = p.nonce !== undefined ? fromHex(p.nonce, `${what}.nonce`) : crypto.getRandomValues(new Uint8Array(hashSizes[c.suite]));
      return { proposalType: "psk", psk: { preSharedKeyId: { psktype: "external", pskId, pskNonce: nonce } } };
    }
    case "gce":
      return {
        proposalType: "group_context_extensions",
        groupContextExtensions: { extensions: extensionsOf(p.extensions, `${what}.extensions`) },
      };
    default:
      throw new Error(`${what}.type: want add, remove, psk or gce, not ${JSON.stringify(p.type)}`);
  }
}

function epochOf(state) {
  return Number(state.groupContext.epoch);
}

function summary(c) {
  const s = c.state;
  const members = [];
  s.ratchetTree.forEach((n, i) => {
    if (i % 2 === 0 && n !== undefined && n.nodeType === "leaf") {
      const cred = n.leaf.credential;
      members.push({ leaf: i / 2, identity: cred.credentialType === "basic" ? toHex(cred.identity) : "" });
    }
  });
  return {
    epoch: epochOf(s),
    suite: suiteId(s.groupContext.cipherSuite),
    groupId: toHex(s.groupContext.groupId),
    leaf: s.privatePath.leafIndex,
    epochAuthenticator: toHex(s.keySchedule.epochAuthenticator),
    treeHash: toHex(s.groupContext.treeHash),
    confirmedTranscriptHash: toHex(s.groupContext.confirmedTranscriptHash),
    active: s.groupActiveState.kind,
    members,
  };
}

// applyCommit stores a commit's new state, or holds it as pending when asked (a client waiting for its delivery
// service to sequence the commit; see merge and discard).
function applyCommit(req, c, newState, consumed) {
  if (req.pending === true) {
    c.pending = { state: newState, consumed };
  } else {
    c.state = newState;
    zero(consumed);
  }
}

async function commitResult(req, c, res, cs) {
  applyCommit(req, c, res.newState, res.consumed);
  const answer = { commit: encodeMsg(res.commit), epoch: epochOf(res.newState), tree: encodeTree(res.newState.ratchetTree) };
  if (res.welcome !== undefined) answer.welcome = encodeWelcomeMsg(res.welcome);
  if (req.groupInfo === true) {
    answer.groupInfo = encodeGroupInfoMsg(await makeGroupInfo(res.newState, cs, { tsmlsExternalPub: req.tsmlsExternalPub === true }));
  }
  return answer;
}

const ops = {
  async ping() {
    return { implementation: "ts-mls", version: "1.6.4", node: process.version };
  },

  async keypackage(req) {
    const c = client(req.client, { create: true });
    const suite = suiteOf(req, c);
    c.suite ??= suite;
    const kp = await newKeyPackage(suite, identityOf(req, c), capsOf(req), keyOpts(req));
    c.keyPackages.push(kp);
    return { keyPackage: encodeKeyPackageMsg(kp.publicPackage), ref: toHex(kp.ref) };
  },

  async create(req) {
    const c = client(req.client, { create: true });
    if (c.state !== undefined) throw new Error(`client ${c.name}: already in a group`);
    const suite = suiteOf(req, c);
    const cs = await impl(suite);
    const kp = await takeKeyPackage(req, c, suite);
    const groupId = req.groupId !== undefined ? fromHex(req.groupId, "groupId") : crypto.getRandomValues(new Uint8Array(16));
    c.state = await createGroup(groupId, kp.publicPackage, kp.privatePackage, extensionsOf(req.extensions, "extensions"), cs);
    c.suite = suite;
    return summary(c);
  },

  async add(req) {
    const c = member(req.client, { committing: true });
    const cs = await impl(c.suite);
    const kps = req.keyPackages ?? (req.keyPackage !== undefined ? [req.keyPackage] : []);
    if (!Array.isArray(kps) || kps.length === 0) throw new Error("keyPackages: want one or more KeyPackage MLSMessages");
    const extraProposals = kps.map((kp, i) => proposalOf({ type: "add", keyPackage: kp }, i, c));
    const res = await createCommit(
      { state: c.state, cipherSuite: cs, pskIndex: pskIndex(c, c.state) },
      {
        extraProposals,
        wireAsPublicMessage: req.private !== true,
        ratchetTreeExtension: req.ratchetTree !== false,
        authenticatedData: fromHex(req.authenticatedData ?? "", "authenticatedData"),
      },
    );
    return commitResult(req, c, res, cs);
  },

  async commit(req) {
    const c = member(req.client, { committing: true });
    const cs = await impl(c.suite);
    const extraProposals = (req.proposals ?? []).map((p, i) => proposalOf(p, i, c));
    const res = await createCommit(
      { state: c.state, cipherSuite: cs, pskIndex: pskIndex(c, c.state) },
      {
        extraProposals,
        wireAsPublicMessage: req.private !== true,
        ratchetTreeExtension: req.ratchetTree !== false,
        authenticatedData: fromHex(req.authenticatedData ?? "", "authenticatedData"),
      },
    );
    return commitResult(req, c, res, cs);
  },

  async propose(req) {
    const c = member(req.client, { committing: true });
    const cs = await impl(c.suite);
    const proposal = proposalOf(req.proposal, 0, c);
    const res = await createProposal(
      c.state,
      req.private !== true,
      proposal,
      cs,
      fromHex(req.authenticatedData ?? "", "authenticatedData"),
    );
    c.state = res.newState;
    zero(res.consumed);
    return { proposal: encodeMsg(res.message) };
  },

  async merge(req) {
    const c = client(req.client);
    if (c.pending === undefined) throw new Error(`client ${c.name}: no pending commit`);
    c.state = c.pending.state;
    zero(c.pending.consumed);
    c.pending = undefined;
    return summary(c);
  },

  async discard(req) {
    const c = client(req.client);
    if (c.pending === undefined) throw new Error(`client ${c.name}: no pending commit`);
    c.pending = undefined;
    return summary(c);
  },

  async join(req) {
    const c = client(req.client);
    if (c.state !== undefined) throw new Error(`client ${c.name}: already in a group`);
    const msg = decodeMessage(req.welcome, "welcome", "mls_welcome");
    const welcome = msg.welcome;
    const suite = suiteId(welcome.cipherSuite);
    const cs = await impl(suite);
    // The Welcome names the KeyPackage it is for by ref; use the client's KeyPackage with a matching ref.
    const i = c.keyPackages.findIndex(
      (k) => k.suite === suite && welcome.secrets.some((s) => Buffer.compare(Buffer.from(s.newMember), Buffer.from(k.ref)) === 0),
    );
    if (i < 0) throw new Error(`client ${c.name}: the Welcome is for none of its KeyPackages`);
    const kp = c.keyPackages[i];
    const tree = req.tree !== undefined ? decodeTree(req.tree, "tree") : undefined;
    c.state = await joinGroup(welcome, kp.publicPackage, kp.privatePackage, makePskIndex(undefined, c.psks), cs, tree);
    c.keyPackages.splice(i, 1);
    c.suite = suite;
    return summary(c);
  },

  async process(req) {
    const c = member(req.client);
    const cs = await impl(c.suite);
    const msg = decodeMessage(req.message, "message", "mls_public_message", "mls_private_message");
    // The callback is told whether the handshake message is a commit or a proposal (a PrivateMessage says so only
    // once decrypted); it accepts everything, as ts-mls's acceptAll does.
    let handshake;
    const accept = (incoming) => {
      handshake = incoming.kind;
      return acceptAll(incoming);
    };
    let res;
    if (msg.wireformat === "mls_public_message") {
      res = { kind: "newState", ...(await processPublicMessage(c.state, msg.publicMessage, pskIndex(c, c.state), cs, accept)) };
    } else {
      res = await processPrivateMessage(c.state, msg.privateMessage, pskIndex(c, c.state), cs, accept);
    }
    c.state = res.newState;
    zero(res.consumed);
    if (res.kind === "applicationMessage") {
      return { kind: "application", plaintext: toHex(res.message), epoch: epochOf(c.state) };
    }
    const epoch = epochOf(c.state);
    const answer = { kind: handshake ?? "unknown", epoch, active: c.state.groupActiveState.kind };
    if (handshake === "commit" && c.pending !== undefined) {
      // Another member's commit for this epoch won; the client's own pending commit can never apply now.
      c.pending = undefined;
      answer.pendingDiscarded = true;
    }
    return answer;
  },

  async send(req) {
    const c = member(req.client);
    const cs = await impl(c.suite);
    const res = await createApplicationMessage(
      c.state,
      fromHex(req.plaintext ?? "", "plaintext"),
      cs,
      fromHex(req.authenticatedData ?? "", "authenticatedData"),
    );
    c.state = res.newState;
    zero(res.consumed);
    return { message: encodePrivateMsg(res.privateMessage) };
  },

  async groupinfo(req) {
    const c = member(req.client);
    const cs = await impl(c.suite);
    const gi = await makeGroupInfo(c.state, cs, { tree: req.tree !== false, tsmlsExternalPub: req.tsmlsExternalPub === true });
    return { groupInfo: encodeGroupInfoMsg(gi), tree: encodeTree(c.state.ratchetTree) };
  },

  async tree(req) {
    const c = member(req.client);
    return { tree: encodeTree(c.state.ratchetTree) };
  },

  async externaljoin(req) {
    const c = client(req.client, { create: true });
    if (c.state !== undefined) throw new Error(`client ${c.name}: already in a group`);
    const msg = decodeMessage(req.groupInfo, "groupInfo", "mls_group_info");
    const suite = suiteId(msg.groupInfo.groupContext.cipherSuite);
    const cs = await impl(suite);
    const kp = await takeKeyPackage(req, c, suite);
    const tree = req.tree !== undefined ? decodeTree(req.tree, "tree") : undefined;
    const res = await joinGroupExternal(
      msg.groupInfo,
      kp.publicPackage,
      kp.privatePackage,
      req.resync === true,
      externalPubImpl(cs, msg.groupInfo),
      tree,
      undefined,
      fromHex(req.authenticatedData ?? "", "authenticatedData"),
    );
    c.state = res.newState;
    c.suite = suite;
    return { commit: encodePublicMsg(res.publicMessage), ...summary(c) };
  },

  async state(req) {
    const c = member(req.client);
    const cs = await impl(c.suite);
    const res = summary(c);
    if (req.exporter !== undefined) {
      const e = req.exporter;
      if (typeof e.label !== "string" || !Number.isInteger(e.length) || e.length < 0) {
        throw new Error('exporter: want {"label": string, "context": hex, "length": n}');
      }
      res.exporter = toHex(await mlsExporter(c.state.keySchedule.exporterSecret, e.label, fromHex(e.context ?? "", "exporter.context"), e.length, cs));
    }
    return res;
  },

  // psk gives a client an external PSK (RFC 9420 §8.4), so it can process or make a commit with a psk proposal.
  async psk(req) {
    const c = client(req.client, { create: true });
    const id = fromHex(req.pskId, "pskId");
    c.psks[Buffer.from(id).toString("base64")] = fromHex(req.secret, "secret");
    return {};
  },

  async drop(req) {
    const c = client(req.client);
    clients.delete(c.name);
    return {};
  },

  async bench(req) {
    return runBench(req, (line) => process.stderr.write(line + "\n"));
  },
};

async function handle(line) {
  let req;
  try {
    req = JSON.parse(line);
  } catch (err) {
    return { id: null, error: `request is not JSON: ${err.message}` };
  }
  if (typeof req !== "object" || req === null || Array.isArray(req)) return { id: null, error: "request is not a JSON object" };
  const id = req.id ?? null;
  const op = ops[req.op];
  if (typeof req.op !== "string" || op === undefined || !Object.hasOwn(ops, req.op)) {
    return { id, error: `unknown op ${JSON.stringify(req.op)}` };
  }
  try {
    return { id, result: await op(req) };
  } catch (err) {
    const msg = !(err instanceof Error) ? String(err) : err.name === "Error" ? err.message : `${err.name}: ${err.message}`;
    return { id, error: `${req.op}: ${msg}` };
  }
}

function write(answer) {
  out.write(JSON.stringify(answer) + "\n");
}

// Requests are handled one at a time, in order, so a client's state changes exactly in request order.
let queue = Promise.resolve();
const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  if (line.trim() === "") return;
  queue = queue.then(() => handle(line)).then(write, (err) => write({ id: null, error: `harness: ${err}` }));
});
rl.on("close", () => {
  queue.then(() => process.exit(0));
});
process.on("uncaughtException", (err) => process.stderr.write(`harness: uncaught exception: ${err?.stack ?? err}\n`));
process.on("unhandledRejection", (err) => process.stderr.write(`harness: unhandled rejection: ${err?.stack ?? err}\n`));
