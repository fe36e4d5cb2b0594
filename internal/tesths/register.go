package tesths

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

const sharedSecretRegisterPath = "/_synapse/admin/v1/register"

type sharedSecretRegisterRequest struct {
	Nonce    string `json:"nonce"`
	Username string `json:"username"`
	Password string `json:"password"`
	Admin    bool   `json:"admin"`
	MAC      string `json:"mac"`
}

type sharedSecretRegisterResponse struct {
	UserID      id.UserID   `json:"user_id"`
	AccessToken string      `json:"access_token"`
	DeviceID    id.DeviceID `json:"device_id"`
}

// RegisterUser registers a user through the shared-secret admin API (the nonce and HMAC-SHA1 flow both Synapse and
// Dendrite implement) and returns a client logged in as that user.
func (hs *Homeserver) RegisterUser(ctx context.Context, localpart, password string, admin bool) (*mautrix.Client, error) {
	httpClient := &http.Client{Timeout: 30 * time.Second}
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := hs.adminJSON(ctx, httpClient, http.MethodGet, nil, &nonce); err != nil {
		return nil, fmt.Errorf("failed to get registration nonce: %w", err)
	}
	mac := hmac.New(sha1.New, []byte(hs.sharedSecret))
	adminFlag := "notadmin"
	if admin {
		adminFlag = "admin"
	}
	for i, part := range []string{nonce.Nonce, localpart, password, adminFlag} {
		if i > 0 {
			mac.Write([]byte{0})
		}
		mac.Write([]byte(part))
	}
	req := sharedSecretRegisterRequest{
		Nonce:    nonce.Nonce,
		Username: localpart,
		Password: password,
		Admin:    admin,
		MAC:      hex.EncodeToString(mac.Sum(nil)),
	}
	var resp sharedSecretRegisterResponse
	if err := hs.adminJSON(ctx, httpClient, http.MethodPost, &req, &resp); err != nil {
		return nil, fmt.Errorf("failed to register user %q: %w", localpart, err)
	}
	client, err := mautrix.NewClient(hs.URL, resp.UserID, resp.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("failed to create client for %s: %w", resp.UserID, err)
	}
	client.DeviceID = resp.DeviceID
	return client, nil
}

func (hs *Homeserver) adminJSON(ctx context.Context, client *http.Client, method string, reqBody, respBody any) error {
	var body io.Reader
	if reqBody != nil {
		data, err := json.Marshal(reqBody)
		if err != nil {
			return fmt.Errorf("failed to encode request: %w", err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, hs.URL+sharedSecretRegisterPath, body)
	if err != nil {
		return fmt.Errorf("failed to build request: %w", err)
	}
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("failed to read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s answered %d: %s", method, sharedSecretRegisterPath, resp.StatusCode, data)
	}
	if err = json.Unmarshal(data, respBody); err != nil {
		return fmt.Errorf("failed to decode response: %w", err)
	}
	return nil
}

// Ping asks the homeserver to ping the application service asID (POST /_matrix/client/v1/appservice/{id}/ping),
// which also makes Synapse retry transactions it was holding back. Dendrite has no such endpoint, so on Dendrite
// Ping does nothing and returns nil.
func (hs *Homeserver) Ping(ctx context.Context, asID string) error {
	token, ok := hs.asTokens[asID]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownAppService, asID)
	}
	if hs.Kind == Dendrite {
		return nil
	}
	client, err := mautrix.NewClient(hs.URL, "", token)
	if err != nil {
		return fmt.Errorf("failed to create application service client: %w", err)
	}
	if _, err = client.AppservicePing(ctx, asID, ""); err != nil {
		return fmt.Errorf("failed to ping application service %q: %w", asID, err)
	}
	return nil
}

func randomSecret() (string, error) {
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("failed to generate shared secret: %w", err)
	}
	return hex.EncodeToString(buf), nil
}
