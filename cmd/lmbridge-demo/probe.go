package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// lmKeyServer asks lmbridge's LM listener for its signing keys, which every LM server serves, and returns the
// server name it claims; ok is false when nothing answers there.
func lmKeyServer(ctx context.Context, lmName string) (serverName string, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+lmName+"/_matrix/key/v2/server", nil)
	if err != nil {
		return "", false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", false
	}
	var keys struct {
		ServerName string `json:"server_name"`
	}
	if err := json.Unmarshal(body, &keys); err != nil || keys.ServerName == "" {
		return "", false
	}
	return keys.ServerName, true
}

// askBot sends a command as the demo user and returns the bot's first answer, or "" when it says nothing within wait.
func askBot(ctx context.Context, client *mautrix.Client, roomID id.RoomID, bot id.UserID, command string,
	wait time.Duration) (string, error) {
	sent, err := client.SendText(ctx, roomID, command)
	if err != nil {
		return "", fmt.Errorf("failed to send %q: %w", command, err)
	}
	_, body, err := waitForMessage(ctx, client, roomID, sent.EventID, wait, func(sender id.UserID, _ string) bool {
		return sender == bot
	})
	return body, err
}

// waitForMessage polls the room for a message newer than after that matches, and returns its sender and body; both
// are empty when none came within wait.
func waitForMessage(ctx context.Context, client *mautrix.Client, roomID id.RoomID, after id.EventID, wait time.Duration,
	match func(sender id.UserID, body string) bool) (id.UserID, string, error) {
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		msgs, err := client.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			return "", "", fmt.Errorf("failed to read the demo room: %w", err)
		}
		// Newest first, so the last match before reaching after is the earliest answer. Until after itself shows up
		// (Dendrite's /messages lags behind its sends), older events could be mistaken for answers.
		var sender id.UserID
		var body string
		seenAfter := after == ""
		for _, evt := range msgs.Chunk {
			if evt.ID == after {
				seenAfter = true
				break
			}
			if evt.Type.Type != event.EventMessage.Type {
				continue
			}
			var content struct {
				Body string `json:"body"`
			}
			if json.Unmarshal(evt.Content.VeryRaw, &content) == nil && match(evt.Sender, content.Body) {
				sender, body = evt.Sender, content.Body
			}
		}
		if body != "" && seenAfter {
			return sender, body, nil
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return "", "", nil
}
