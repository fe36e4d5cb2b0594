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
//   {"cmd":"eventState","roomId":...,"eventId":...,"timeoutMs":...}       -> {"type","decryptionFailure","reason","body"}
//   {"cmd":"waitUndecryptable","roomId":...,"eventId":...,"timeoutMs":...} -> eventState, once the event failed
//   {"cmd":"waitUndecryptableFrom","roomId":...,"sender":...,"timeoutMs":...} -> {"eventId",...eventState}
//   {"cmd":"requestKey","roomId":...,"eventId":...,"userId":...,"deviceId":...}  (an m.room_key_request to them)
//   {"cmd":"forwardKey","roomId":...,"eventId":...,"userId":...,"deviceId":...}  (its session, Olm-encrypted)
//   {"cmd":"blacklistUnverified","value":bool}  (share room keys with verified devices only)
//   {"cmd":"waitInvite","timeoutMs":...} -> {"roomId"}
//   {"cmd":"isEncrypted","roomId":...} -> {"encrypted"}
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

// findEvent waits for an event of a room's live timeline.
async function findEvent(roomId, eventId, timeoutMs) {
	return waitFor("event " + eventId, timeoutMs, () =>
		client.getRoom(roomId)?.getLiveTimeline().getEvents().find((ev) => ev.getId() === eventId));
}

async function eventState(ev) {
	if (ev.isEncrypted()) await client.decryptEventIfNeeded(ev);
	return {
		type: ev.getType(),
		decryptionFailure: ev.isDecryptionFailure(),
		reason: ev.decryptionFailureReason ?? "",
		body: ev.getContent().body ?? "",
	};
}

const commands = {
	login,
	async eventState({ roomId, eventId, timeoutMs }) {
		return eventState(await findEvent(roomId, eventId, timeoutMs));
	},
	async waitUndecryptable({ roomId, eventId, timeoutMs }) {
		const ev = await findEvent(roomId, eventId, timeoutMs);
		return waitFor("event " + eventId + " to fail decryption", timeoutMs, async () => {
			const st = await eventState(ev);
			return st.decryptionFailure ? st : null;
		});
	},
	async waitUndecryptableFrom({ roomId, sender, timeoutMs }) {
		return waitFor("an undecryptable event from " + sender, timeoutMs, async () => {
			for (const ev of client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []) {
				if (ev.getSender() !== sender || !ev.isEncrypted()) continue;
				const st = await eventState(ev);
				if (st.decryptionFailure) return { eventId: ev.getId(), ...st };
			}
			return null;
		});
	},
	// The Rust SDK asks only the user's own devices for a missing key; this is the request of the spec's key sharing
	// (m.room_key_request, unencrypted) sent to another user's device, as other clients send it.
	async requestKey({ roomId, eventId, userId, deviceId }) {
		const ev = await findEvent(roomId, eventId, 30000);
		const wire = ev.getWireContent();
		const content = {
			action: "request",
			requesting_device_id: client.getDeviceId(),
			request_id: "req" + Date.now() + Math.floor(Math.random() * 1e6),
			body: { algorithm: wire.algorithm, room_id: roomId, sender_key: wire.sender_key, session_id: wire.session_id },
		};
		await client.sendToDevice("m.room_key_request", new Map([[userId, new Map([[deviceId, content]])]]));
		return { sessionId: wire.session_id };
	},
	// A key forward of the session of one of this device's events, as a device that had the key would send it later.
	async forwardKey({ roomId, eventId, userId, deviceId }) {
		const ev = await findEvent(roomId, eventId, 30000);
		const sessionId = ev.getWireContent().session_id;
		const key = (await client.getCrypto().exportRoomKeys()).find((k) => k.room_id === roomId && k.session_id === sessionId);
		if (!key) throw new Error("no exported key for session " + sessionId);
		const payload = {
			algorithm: key.algorithm,
			room_id: key.room_id,
			sender_key: key.sender_key,
			session_id: key.session_id,
			session_key: key.session_key,
			sender_claimed_ed25519_key: key.sender_claimed_keys.ed25519,
			forwarding_curve25519_key_chain: key.forwarding_curve25519_key_chain ?? [],
		};
		const batch = await client.getCrypto().encryptToDeviceMessages("m.forwarded_room_key", [{ userId, deviceId }], payload);
		if (batch.batch.length !== 1) throw new Error("the forward was encrypted for " + batch.batch.length + " devices");
		await client.queueToDevice(batch);
		return { sessionId };
	},
	async blacklistUnverified({ value }) {
		client.getCrypto().globalBlacklistUnverifiedDevices = value;
		return {};
	},
	async waitInvite({ timeoutMs }) {
		const room = await waitFor("an invite", timeoutMs, () => client.getRooms().find((r) => r.getMyMembership() === "invite"));
		return { roomId: room.roomId };
	},
	async isEncrypted({ roomId }) {
		return { encrypted: await client.getCrypto().isEncryptionEnabledInRoom(roomId) };
	},
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
