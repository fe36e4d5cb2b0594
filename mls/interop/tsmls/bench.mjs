// bench.mjs measures ts-mls at the operations lmbridge's MLS benchmarks report, so the Go library's figures can be
// set beside an independent implementation's, measured on the same machine in the same run. The group shape is
// fixed and described in README.md ("Benchmark"); the Go benchmarks build the same shape.
//
// Run alone: node bench.mjs [--suite 1] [--sizes 2,16,256,1024] [--join-sizes 256] [--runs 5] [--msg-size 256]
//            [--msg-batch 100] [--json]
// or through the harness: {"id": 1, "op": "bench", "suite": 1, "sizes": [2, 16], "runs": 5}
import { pathToFileURL } from "node:url";
import {
  createApplicationMessage,
  createCommit,
  createGroup,
  emptyPskIndex,
  joinGroup,
  processPrivateMessage,
  processPublicMessage,
  acceptAll,
} from "ts-mls";
import { impl, newKeyPackage, toHex } from "./mlsutil.mjs";

const now = () => Number(process.hrtime.bigint()) / 1e6;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function figure(op, members, samples, perRun = 1) {
  const ms = samples.map((x) => x / perRun);
  const med = median(ms);
  return {
    op,
    members,
    runs: ms.length,
    opsPerRun: perRun,
    medianMs: med,
    minMs: Math.min(...ms),
    maxMs: Math.max(...ms),
    opsPerSec: med > 0 ? 1000 / med : 0,
  };
}

function sameAuthenticator(a, b, what) {
  if (toHex(a.keySchedule.epochAuthenticator) !== toHex(b.keySchedule.epochAuthenticator)) {
    throw new Error(`${what}: the two members' epoch authenticators differ`);
  }
}

// makeGroup builds the benchmark's group of n members: leaf 0 ("alice") creates it and adds the other n-1 in one
// commit (no path: ts-mls sends none for an add-only commit), leaf 1 ("bob") joins from that Welcome, and alice then
// makes one empty commit with a path that bob processes, so alice's direct path holds keys. Every other parent node
// stays blank.
async function makeGroup(n, suite) {
  const cs = await impl(suite);
  const enc = new TextEncoder();
  const alice = await newKeyPackage(suite, enc.encode("alice"));
  let sA = await createGroup(enc.encode(`bench-${n}`), alice.publicPackage, alice.privatePackage, [], cs);
  if (n === 1) return { cs, sA, sB: undefined };
  const others = [];
  for (let i = 1; i < n; i++) others.push(await newKeyPackage(suite, enc.encode(`member-${i}`)));
  const add = await createCommit(
    { state: sA, cipherSuite: cs },
    {
      extraProposals: others.map((k) => ({ proposalType: "add", add: { keyPackage: k.publicPackage } })),
      wireAsPublicMessage: true,
      ratchetTreeExtension: true,
    },
  );
  sA = add.newState;
  let sB = await joinGroup(add.welcome, others[0].publicPackage, others[0].privatePackage, emptyPskIndex, cs);
  sameAuthenticator(sA, sB, `group of ${n}: join`);
  const warm = await createCommit({ state: sA, cipherSuite: cs }, { wireAsPublicMessage: true });
  sA = warm.newState;
  sB = (await processPublicMessage(sB, warm.commit.publicMessage, emptyPskIndex, cs, acceptAll)).newState;
  sameAuthenticator(sA, sB, `group of ${n}: warm-up commit`);
  return { cs, sA, sB };
}

function options(req) {
  const list = (v, d) => (v === undefined ? d : (Array.isArray(v) ? v : [v]).map(Number));
  const o = {
    suite: Number(req.suite ?? 1),
    sizes: list(req.sizes, [2, 16, 256, 1024]),
    joinSizes: list(req.joinSizes, [256]),
    runs: Number(req.runs ?? 5),
    msgSize: Number(req.msgSize ?? 256),
    msgBatch: Number(req.msgBatch ?? 100),
  };
  for (const n of [...o.sizes, ...o.joinSizes]) {
    if (!Number.isInteger(n) || n < 2 || n > 65536) throw new Error(`group size ${n}: want an integer from 2 to 65536`);
  }
  if (!Number.isInteger(o.runs) || o.runs < 1 || o.runs > 1000) throw new Error("runs: want 1 to 1000");
  if (!Number.isInteger(o.msgSize) || o.msgSize < 0 || o.msgSize > 1 << 20) throw new Error("msgSize: want 0 to 1 MiB");
  if (!Number.isInteger(o.msgBatch) || o.msgBatch < 1 || o.msgBatch > 100000) throw new Error("msgBatch: want 1 to 100000");
  return o;
}

// runBench measures, for each size: commit (an empty commit with a path by alice), process (bob processing that
// commit), protect and unprotect (an application message of msgSize bytes, timed over msgBatch consecutive messages
// and divided); and for each join size J: join (a member joining from a Welcome that adds it, with the ratchet_tree
// extension, to a group of J-1, so the group then has J). The states are immutable in ts-mls, so each run starts
// from the same state; nothing is zeroed between runs for the same reason.
export async function runBench(req, log = () => {}) {
  const o = options(req);
  const figures = [];
  const plaintext = new Uint8Array(o.msgSize).fill(0x61);
  for (const n of o.sizes) {
    const t0 = now();
    const { cs, sA, sB } = await makeGroup(n, o.suite);
    log(`bench: suite ${o.suite}, ${n} members: group built in ${(now() - t0).toFixed(0)} ms`);

    let last;
    const commitMs = [];
    for (let r = 0; r < o.runs; r++) {
      const t = now();
      last = await createCommit({ state: sA, cipherSuite: cs }, { wireAsPublicMessage: true });
      commitMs.push(now() - t);
    }
    figures.push(figure("commit", n, commitMs));

    const processMs = [];
    for (let r = 0; r < o.runs; r++) {
      const t = now();
      const res = await processPublicMessage(sB, last.commit.publicMessage, emptyPskIndex, cs, acceptAll);
      processMs.push(now() - t);
      sameAuthenticator(last.newState, res.newState, `${n} members: process`);
    }
    figures.push(figure("process", n, processMs));

    let sent;
    const protectMs = [];
    for (let r = 0; r < o.runs; r++) {
      let s = sA;
      const msgs = [];
      const t = now();
      for (let k = 0; k < o.msgBatch; k++) {
        const res = await createApplicationMessage(s, plaintext, cs);
        s = res.newState;
        msgs.push(res.privateMessage);
      }
      protectMs.push(now() - t);
      sent = msgs;
    }
    figures.push(figure("protect", n, protectMs, o.msgBatch));

    const unprotectMs = [];
    for (let r = 0; r < o.runs; r++) {
      let s = sB;
      const t = now();
      for (const m of sent) {
        const res = await processPrivateMessage(s, m, emptyPskIndex, cs, acceptAll);
        if (res.kind !== "applicationMessage" || res.message.length !== plaintext.length) {
          throw new Error(`${n} members: unprotect gave back something other than the message`);
        }
        s = res.newState;
      }
      unprotectMs.push(now() - t);
    }
    figures.push(figure("unprotect", n, unprotectMs, o.msgBatch));
    log(`bench: suite ${o.suite}, ${n} members: measured`);
  }

  for (const j of o.joinSizes) {
    const t0 = now();
    const { cs, sA } = await makeGroup(j - 1, o.suite);
    const joiner = await newKeyPackage(o.suite, new TextEncoder().encode("joiner"));
    const add = await createCommit(
      { state: sA, cipherSuite: cs },
      {
        extraProposals: [{ proposalType: "add", add: { keyPackage: joiner.publicPackage } }],
        wireAsPublicMessage: true,
        ratchetTreeExtension: true,
      },
    );
    log(`bench: suite ${o.suite}, join at ${j} members: group built in ${(now() - t0).toFixed(0)} ms`);
    const joinMs = [];
    for (let r = 0; r < o.runs; r++) {
      const t = now();
      const s = await joinGroup(add.welcome, joiner.publicPackage, joiner.privatePackage, emptyPskIndex, cs);
      joinMs.push(now() - t);
      sameAuthenticator(add.newState, s, `join at ${j} members`);
    }
    figures.push(figure("join", j, joinMs));
  }
  return { implementation: "ts-mls 1.6.4", node: process.version, suite: o.suite, runs: o.runs, msgSize: o.msgSize, figures };
}

function parseArgs(argv) {
  const req = {};
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      if (i + 1 >= argv.length) throw new Error(`${a}: missing value`);
      return argv[++i];
    };
    switch (a) {
      case "--suite": req.suite = Number(v()); break;
      case "--sizes": req.sizes = v().split(",").map(Number); break;
      case "--join-sizes": {
        const s = v();
        req.joinSizes = s === "" ? [] : s.split(",").map(Number);
        break;
      }
      case "--runs": req.runs = Number(v()); break;
      case "--msg-size": req.msgSize = Number(v()); break;
      case "--msg-batch": req.msgBatch = Number(v()); break;
      case "--json": json = true; break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  return { req, json };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  try {
    const { req, json } = parseArgs(process.argv.slice(2));
    const res = await runBench(req, (l) => process.stderr.write(l + "\n"));
    if (json) {
      process.stdout.write(JSON.stringify(res) + "\n");
    } else {
      console.log(`${res.implementation} on Node ${res.node}, suite ${res.suite}, median of ${res.runs} runs`);
      console.log("op          members      ms/op        ops/s");
      for (const f of res.figures) {
        console.log(`${f.op.padEnd(10)} ${String(f.members).padStart(8)} ${f.medianMs.toFixed(3).padStart(12)} ${f.opsPerSec.toFixed(1).padStart(12)}`);
      }
    }
  } catch (err) {
    process.stderr.write(`bench: ${err?.stack ?? err}\n`);
    process.exit(1);
  }
}
