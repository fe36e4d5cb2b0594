// A Matrix client device for lmbridge's encryption end-to-end tests: matrix-js-sdk with its Rust crypto (the
// WASM build of matrix-sdk-crypto), which nobody in this project wrote. One process is one device. It reads one JSON
// command per line on stdin and answers each with one JSON line on stdout: {"ok":true,...} or {"ok":false,"error":...}.
// Logs go to stderr.
//
// Commands:
//   {"cmd":"login","baseUrl":...,"user":...,"password":...}          -> {"userId","deviceId"}
//   {"cmd":"createRoom","invite":[...],"encrypted":bool,"name":...}  -> {"roomId"}
//   {"cmd":"join","roomId":...}
//   {"cmd":"enableEncryption","roomId":...,"rotationMsgs":n}          (rotation_period_msgs when given)
//   {"cmd":"send","roomId":...,"body":...}                            -> {"eventId"}
//   {"cmd":"waitMessage","roomId":...,"body"|"contains":...,"timeoutMs":...} -> {"eventId","sender","encrypted","body"}
//   {"cmd":"invite","roomId":...,"userId":...}
//   {"cmd":"waitJoined","roomId":...,"userId":...,"timeoutMs":...}
//   {"cmd":"stop"}
import "./polyfill.mjs";
import "fake-indexeddb/auto";
import * as readline from "node:readline";
import * as sdk from "matrix-js-sdk";

// stdout carries the answers only: matrix-js-sdk's logging goes to stderr with the rest.
for (const level of ["log", "info", "debug", "trace"]) console[level] = (...args) => console.error(...args);

let client = null;

function reply(obj) {
	process.stdout.write(JSON.stringify(obj) + "\n");
}

function sleep(ms) {
	return new Promise((resolve) => setTimeout(resolve, ms));
}

async function login({ baseUrl, user, password }) {
	const bare = sdk.createClient({ baseUrl });
	const resp = await bare.loginRequest({
		type: "m.login.password",
		identifier: { type: "m.id.user", user },
		password,
		initial_device_display_name: "lmbridge e2e (matrix-js-sdk)",
	});
	client = sdk.createClient({
		baseUrl,
		userId: resp.user_id,
		deviceId: resp.device_id,
		accessToken: resp.access_token,
		// Unsent events in a list of their own, where send finds one to send again.
		pendingEventOrdering: sdk.PendingEventOrdering.Detached,
	});
	await client.initRustCrypto({ useIndexedDB: false });
	const prepared = new Promise((resolve, reject) => {
		client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
			if (state === "PREPARED" || state === "SYNCING") resolve();
			else if (state === "ERROR") reject(data?.error ?? new Error("sync failed"));
		});
	});
	await client.startClient({ initialSyncLimit: 50 });
	await prepared;
	return { userId: resp.user_id, deviceId: resp.device_id };
}

async function waitFor(what, timeoutMs, fn) {
	const deadline = Date.now() + (timeoutMs ?? 60000);
	for (;;) {
		const got = await fn();
		if (got) return got;
		if (Date.now() > deadline) throw new Error("timed out waiting for " + what);
		await sleep(100);
	}
}

async function findMessage(roomId, body, contains) {
	const room = client.getRoom(roomId);
	if (!room) return null;
	for (const ev of room.getLiveTimeline().getEvents()) {
		if (ev.isEncrypted()) await client.decryptEventIfNeeded(ev);
		if (ev.getType() !== "m.room.message") continue;
		const content = ev.getContent();
		if (content.body === body || (contains && typeof content.body === "string" && content.body.includes(contains))) {
			return { eventId: ev.getId(), sender: ev.getSender(), encrypted: ev.isEncrypted(), body: content.body };
		}
	}
	return null;
}

const commands = {
	login,
	async createRoom({ invite, encrypted, name }) {
		const initial_state = encrypted
			? [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }]
			: [];
		const resp = await client.createRoom({ preset: "private_chat", name, invite, initial_state });
		await waitFor("the created room to sync", 30000, () => client.getRoom(resp.room_id));
		return { roomId: resp.room_id };
	},
	async join({ roomId }) {
		await client.joinRoom(roomId);
		return {};
	},
	async enableEncryption({ roomId, rotationMsgs }) {
		const content = { algorithm: "m.megolm.v1.aes-sha2" };
		if (rotationMsgs) content.rotation_period_msgs = rotationMsgs;
		await client.sendStateEvent(roomId, "m.room.encryption", content, "");
		await waitFor("the room to be encrypted", 30000, async () => client.getCrypto().isEncryptionEnabledInRoom(roomId));
		return {};
	},
	async send({ roomId, body }) {
		try {
			const resp = await client.sendMessage(roomId, { msgtype: "m.text", body });
			return { eventId: resp.event_id };
		} catch (err) {
			// Node's fetch now and then loses a kept-alive connection the homeserver closed at the same moment; the
			// SDK keeps the event as not sent, and sending it again keeps its transaction ID, so it is not doubled.
			if (err?.name !== "ConnectionError") throw err;
			const room = client.getRoom(roomId);
			const pending = room?.getPendingEvents().find((ev) => ev.status === "not_sent" && ev.getContent().body === body);
			if (!pending) throw err;
			await sleep(500);
			const resp = await client.resendEvent(pending, room);
			return { eventId: resp.event_id };
		}
	},
	async waitMessage({ roomId, body, contains, timeoutMs }) {
		return waitFor("message " + JSON.stringify(body ?? contains), timeoutMs, () => findMessage(roomId, body, contains));
	},
	async invite({ roomId, userId }) {
		await client.invite(roomId, userId);
		return {};
	},
	async waitJoined({ roomId, userId, timeoutMs }) {
		await waitFor(userId + " to join", timeoutMs, () => client.getRoom(roomId)?.getMember(userId)?.membership === "join");
		return {};
	},
	async stop() {
		client?.stopClient();
		setTimeout(() => process.exit(0), 50);
		return {};
	},
};

const rl = readline.createInterface({ input: process.stdin });
// Commands run one at a time, in order.
let queue = Promise.resolve();
rl.on("line", (line) => {
	queue = queue.then(async () => {
		let msg;
		try {
			msg = JSON.parse(line);
			const fn = commands[msg.cmd];
			if (!fn) throw new Error("unknown command " + msg.cmd);
			reply({ ok: true, ...(await fn(msg)) });
		} catch (err) {
			reply({ ok: false, error: String(err?.stack ?? err) });
		}
	});
});
rl.on("close", () => {
	client?.stopClient();
	process.exit(0);
});
