package pdu

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
)

// interopDir holds a copy of shared/interop: known answers from implementations nobody on this project wrote.
var interopDir = filepath.Join("testdata", "interop")

type vectorKey struct {
	ServerName string `json:"server_name"`
	KeyID      string `json:"key_id"`
	Seed       string `json:"seed"`
	PublicKey  string `json:"public_key"`
}

func (k vectorKey) private(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	seed, err := base64.RawStdEncoding.DecodeString(k.Seed)
	if err != nil {
		t.Fatalf("bad seed %q: %v", k.Seed, err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if got := base64.RawStdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey)); got != k.PublicKey {
		t.Fatalf("seed of %s gives public key %s, vectors say %s", k.ServerName, got, k.PublicKey)
	}
	return priv
}

type vectorFile struct {
	MatrixSpecSigning struct {
		vectorKey
		Cases []struct {
			Input     json.RawMessage `json:"input"`
			Signature string          `json:"signature"`
		} `json:"cases"`
	} `json:"matrix_spec_signing"`
	LMMessage struct {
		RoomVersion      string          `json:"room_version"`
		Participant      vectorKey       `json:"participant"`
		Hub              vectorKey       `json:"hub"`
		LPDUUnsigned     json.RawMessage `json:"lpdu_unsigned"`
		LPDUHashInput    string          `json:"lpdu_hash_input"`
		HashesLPDUSHA256 string          `json:"hashes_lpdu_sha256"`
		LPDUSigningInput string          `json:"lpdu_signing_input"`
		ParticipantSig   string          `json:"participant_signature"`
		LPDUID           string          `json:"lpdu_id"`
		HubAdds          struct {
			AuthEvents []string `json:"auth_events"`
			PrevEvents []string `json:"prev_events"`
		} `json:"hub_adds"`
		PDUHashesSHA256 string `json:"pdu_hashes_sha256"`
		HubSignature    string `json:"hub_signature"`
		EventID         string `json:"event_id"`
	} `json:"lm_message"`
}

func loadVectors(t *testing.T) *vectorFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(interopDir, "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

func TestMatrixSpecSigningVectors(t *testing.T) {
	v := loadVectors(t).MatrixSpecSigning
	priv := v.private(t)
	if len(v.Cases) == 0 {
		t.Fatal("no cases in vectors.json")
	}
	for _, c := range v.Cases {
		input, err := canonicaljson.Canonicalize(c.Input)
		if err != nil {
			t.Fatal(err)
		}
		if got := base64.RawStdEncoding.EncodeToString(ed25519.Sign(priv, input)); got != c.Signature {
			t.Errorf("signature of %s = %s, want %s", input, got, c.Signature)
		}
	}
}

func TestLMMessageVector(t *testing.T) {
	vf := loadVectors(t)
	v := vf.LMMessage
	if _, err := LookupRoomVersion(v.RoomVersion); err != nil {
		t.Fatal(err)
	}
	partKey, hubKey := v.Participant.private(t), v.Hub.private(t)

	lpdu, err := ParseTemplate(v.LPDUUnsigned)
	if err != nil {
		t.Fatal(err)
	}
	hashInput, err := lpdu.appendCanonical(nil, modeLPDUHash)
	if err != nil {
		t.Fatal(err)
	}
	if string(hashInput) != v.LPDUHashInput {
		t.Errorf("LPDU hash input\n got %s\nwant %s", hashInput, v.LPDUHashInput)
	}
	if err := lpdu.FillLPDUHash(); err != nil {
		t.Fatal(err)
	}
	if lpdu.Hashes.LPDU.SHA256 != v.HashesLPDUSHA256 {
		t.Errorf("hashes.lpdu.sha256 = %s, want %s", lpdu.Hashes.LPDU.SHA256, v.HashesLPDUSHA256)
	}
	signInput, err := lpdu.appendCanonical(nil, modeLPDUReference)
	if err != nil {
		t.Fatal(err)
	}
	if string(signInput) != v.LPDUSigningInput {
		t.Errorf("LPDU signing input\n got %s\nwant %s", signInput, v.LPDUSigningInput)
	}
	if !lpdu.IsLPDU() {
		t.Fatal("filled LPDU is not IsLPDU")
	}
	if err := lpdu.SignLPDU(v.Participant.ServerName, v.Participant.KeyID, partKey); err != nil {
		t.Fatal(err)
	}
	if got := lpdu.Signatures[v.Participant.ServerName][v.Participant.KeyID]; got != v.ParticipantSig {
		t.Errorf("participant signature = %s, want %s", got, v.ParticipantSig)
	}
	lpduID, err := lpdu.EventID()
	if err != nil {
		t.Fatal(err)
	}
	if lpduID != v.LPDUID {
		t.Errorf("LPDU ID = %s, want %s", lpduID, v.LPDUID)
	}

	// The LPDU as it goes on the wire parses back to the same thing.
	wire, err := lpdu.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	received, err := Parse(wire)
	if err != nil {
		t.Fatalf("parse own LPDU %s: %v", wire, err)
	}
	keys := StaticKeys{
		v.Participant.ServerName: {v.Participant.KeyID: partKey.Public().(ed25519.PublicKey)},
		v.Hub.ServerName:         {v.Hub.KeyID: hubKey.Public().(ed25519.PublicKey)},
	}
	res, err := VerifyReceived(context.Background(), keys, received)
	if err != nil || res.Redacted {
		t.Fatalf("own LPDU does not verify: %v %+v", err, res)
	}

	if len(v.HubAdds.PrevEvents) != 1 {
		t.Fatalf("hub_adds has %d prev events", len(v.HubAdds.PrevEvents))
	}
	eventID, err := received.Complete(v.HubAdds.AuthEvents, v.HubAdds.PrevEvents[0], v.Hub.ServerName, v.Hub.KeyID, hubKey)
	if err != nil {
		t.Fatal(err)
	}
	if received.Hashes.SHA256 != v.PDUHashesSHA256 {
		t.Errorf("hashes.sha256 = %s, want %s", received.Hashes.SHA256, v.PDUHashesSHA256)
	}
	if got := received.Signatures[v.Hub.ServerName][v.Hub.KeyID]; got != v.HubSignature {
		t.Errorf("hub signature = %s, want %s", got, v.HubSignature)
	}
	if eventID != v.EventID {
		t.Errorf("Complete returned event ID %s, want %s", eventID, v.EventID)
	}
	if id, _ := received.EventID(); id != v.EventID {
		t.Errorf("EventID() = %s, want %s", id, v.EventID)
	}
	if id, _ := received.LPDUID(); id != v.LPDUID {
		t.Errorf("LPDUID() of the PDU = %s, want %s", id, v.LPDUID)
	}
	if got := received.Signatures[v.Participant.ServerName][v.Participant.KeyID]; got != v.ParticipantSig {
		t.Errorf("participant signature lost in completion: %s", got)
	}

	wire, err = received.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	final, err := Parse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if final.IsLPDU() {
		t.Error("completed PDU still IsLPDU")
	}
	res, err = VerifyReceived(context.Background(), keys, final)
	if err != nil || res.Redacted {
		t.Fatalf("completed PDU does not verify: %v %+v", err, res)
	}

	// Only the sender's server and hub_server count: a participant key that is wrong must fail, a third server's
	// bogus signature must not matter.
	extra := final.Clone()
	extra.Signatures["other.example"] = map[string]string{"ed25519:x": "AAAA"}
	if err := extra.VerifySignatures(context.Background(), keys); err != nil {
		t.Errorf("a third server's signature was considered: %v", err)
	}
	wrongKeys := StaticKeys{
		v.Participant.ServerName: {v.Participant.KeyID: hubKey.Public().(ed25519.PublicKey)},
		v.Hub.ServerName:         {v.Hub.KeyID: hubKey.Public().(ed25519.PublicKey)},
	}
	if err := final.VerifySignatures(context.Background(), wrongKeys); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong participant key: got %v, want ErrBadSignature", err)
	}
	wrongKeys = StaticKeys{
		v.Participant.ServerName: {v.Participant.KeyID: partKey.Public().(ed25519.PublicKey)},
		v.Hub.ServerName:         {v.Hub.KeyID: partKey.Public().(ed25519.PublicKey)},
	}
	if err := final.VerifySignatures(context.Background(), wrongKeys); !errors.Is(err, ErrBadSignature) {
		t.Errorf("wrong hub key: got %v, want ErrBadSignature", err)
	}
}
