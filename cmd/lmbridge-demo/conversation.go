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
	answer, err := askBot(ctx, client, roomID, bot, "!lm invite "+peer.user, conversationWait)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(answer, "Invited") {
		return "", fmt.Errorf("%w: the bot answered !lm invite with %q", errNoConversation, answer)
	}
	ghost, _, err := waitForMessage(ctx, client, roomID, "", conversationWait, func(sender id.UserID, body string) bool {
		return sender != client.UserID && sender != bot && strings.HasPrefix(body, "Hello from "+peer.user)
	})
	if err != nil {
		return "", err
	}
	if ghost == "" {
		return "", fmt.Errorf("%w: %s's hello did not reach the Matrix room within %s", errNoConversation, peer.user, conversationWait)
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
	if reply == "" || !peer.heard(text) {
		return "", fmt.Errorf("%w: %s did not answer %q within %s (heard it: %v)", errNoConversation, peer.user, text,
			conversationWait, peer.heard(text))
	}
	return ghost, nil
}
