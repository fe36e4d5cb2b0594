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
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		msgs, err := client.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			return "", fmt.Errorf("failed to read the demo room: %w", err)
		}
		// Newest first: anything from the bot before our own command is its answer.
		var answer string
		for _, evt := range msgs.Chunk {
			if evt.ID == sent.EventID {
				break
			}
			if evt.Sender == bot && evt.Type.Type == event.EventMessage.Type {
				var content struct {
					Body string `json:"body"`
				}
				if json.Unmarshal(evt.Content.VeryRaw, &content) == nil {
					answer = content.Body
				}
			}
		}
		if answer != "" {
			return answer, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return "", nil
}
