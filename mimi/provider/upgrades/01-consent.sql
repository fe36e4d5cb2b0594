-- v1 -> v2: Consent decisions and requests
-- A user's decision on another provider's user adding it (granted or revoked, room_uri '' for every room): a
-- provider keeps its own users' decisions, checked when key material is asked for them, and the decisions other
-- providers' users told its users.
CREATE TABLE mimi_consent (
	target_uri    TEXT    NOT NULL,
	requester_uri TEXT    NOT NULL,
	room_uri      TEXT    NOT NULL,
	granted       BOOLEAN NOT NULL,
	updated_at    BIGINT  NOT NULL,
	PRIMARY KEY (target_uri, requester_uri, room_uri)
);

-- Requests for consent from other providers' users to this provider's users, until granted, revoked or cancelled.
CREATE TABLE mimi_consent_request (
	target_uri    TEXT   NOT NULL,
	requester_uri TEXT   NOT NULL,
	room_uri      TEXT   NOT NULL,
	requested_at  BIGINT NOT NULL,
	PRIMARY KEY (target_uri, requester_uri, room_uri)
);
