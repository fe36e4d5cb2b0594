package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// conversationWait bounds each step of the conversation with the demo LM server.
const conversationWait = time.Minute

// errNoConversation means the Matrix room and the LM room did not talk both ways.
var errNoConversation = errors.New("the Matrix room and the LM room did not talk")

// talkToLM has the demo user, in a room the bridge has linked, invite the demo LM server's user and exchange a
// message each way with him. It returns the ghost that stands for him on Matrix.
func talkToLM(ctx context.Context, client *mautrix.Client, roomID id.RoomID, bot id.UserID, peer *lmPeer) (id.UserID, error) {
	return converse(ctx, client, roomID, bot, "!lm invite "+peer.user, "Invited", peer.user, peer.heard)
}

// talkToMIMI is talkToLM for a room linked to a MIMI room and the demo MIMI provider's user.
func talkToMIMI(ctx context.Context, client *mautrix.Client, roomID id.RoomID, bot id.UserID, peer *mimiPeer) (id.UserID, error) {
	return converse(ctx, client, roomID, bot, "!lm mimi invite "+peer.user, "Added", peer.user, peer.heard)
}

// converse invites user with the bot command invite (answered with a text starting with invited), waits for their
// hello and exchanges a message each way; heard says whether the user received a text.
func converse(ctx context.Context, client *mautrix.Client, roomID id.RoomID, bot id.UserID, invite, invited, user string,
	heard func(string) bool) (id.UserID, error) {
	answer, err := askBot(ctx, client, roomID, bot, invite, conversationWait)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(answer, invited) {
		return "", fmt.Errorf("%w: the bot answered %s with %q", errNoConversation, invite, answer)
	}
	ghost, _, err := waitForMessage(ctx, client, roomID, "", conversationWait, func(sender id.UserID, body string) bool {
		return sender != client.UserID && sender != bot && strings.HasPrefix(body, "Hello from "+user)
	})
	if err != nil {
		return "", err
	}
	if ghost == "" {
		return "", fmt.Errorf("%w: %s's hello did not reach the Matrix room within %s", errNoConversation, user, conversationWait)
	}
	text := "Hi " + peerUser + ", this is " + string(client.UserID) + " on Matrix."
	sent, err := client.SendText(ctx, roomID, text)
	if err != nil {
		return "", fmt.Errorf("failed to send to the demo room: %w", err)
	}
	_, reply, err := waitForMessage(ctx, client, roomID, sent.EventID, conversationWait, func(sender id.UserID, body string) bool {
		return sender == ghost && strings.HasSuffix(body, text)
	})
	if err != nil {
		return "", err
	}
	if reply == "" || !heard(text) {
		return "", fmt.Errorf("%w: %s did not answer %q within %s (heard it: %v)", errNoConversation, user, text,
			conversationWait, heard(text))
	}
	return ghost, nil
}
