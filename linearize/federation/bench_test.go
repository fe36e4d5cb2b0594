package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/federation"
)

// benchTransaction is a full /send: 50 LPDU-sized events.
func benchTransaction() *Transaction {
	txn := &Transaction{}
	for i := range maxPDUsPerTransaction {
		txn.PDUs = append(txn.PDUs, json.RawMessage(fmt.Sprintf(
			`{"type":"m.room.message","room_id":"!r:hub.example","sender":"@user%d:part.example","hub_server":"hub.example","origin_server_ts":%d,"content":{"msgtype":"m.text","body":%q},"hashes":{"lpdu":{"sha256":"YnU9G2XioJuehgYf2b17B4iVuvClAbSeWA1xXW6Uxlw"}},"signatures":{"part.example":{"ed25519:1":"yqiuaPvjkkoXR1aIxXNHmxuVsX05de8tVP8UBpz+vsx/kr0ZNPOt5swxgxcVeOKm3U1af0Ck5vzBeuvaVWiECw"}}}`,
			i, 1795292900000+i, strings.Repeat("hello ", 20))))
	}
	return txn
}

func BenchmarkVerifyRequest(b *testing.B) {
	key := federation.GenerateSigningKey()
	ring := staticKeys{"part.example " + string(key.ID): key.Priv.Public().(ed25519.PublicKey)}
	body, _ := json.Marshal(benchTransaction())
	uri := UnstablePrefix + "/send/txn1"
	header, _ := SignRequest(key, "part.example", "hub.example", "PUT", uri, body)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := VerifyRequest(context.Background(), ring, "hub.example", "PUT", []string{uri}, []string{header}, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*maxPDUsPerTransaction)/b.Elapsed().Seconds(), "pdus/s")
}

// BenchmarkSendTransactionLoopback is a signed 50-PDU /send from our client to our server over loopback HTTP,
// X-Matrix verified, decoded and handed to a Handler that does nothing.
func BenchmarkSendTransactionLoopback(b *testing.B) {
	a, hub := newTestPeer(b), newTestPeer(b)
	hub.server.MaxRequestBytes = DefaultMaxRequestBytes
	txn := benchTransaction()
	ctx := context.Background()
	if _, err := a.client.SendTransaction(ctx, hub.name, "warmup", txn); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		if _, err := a.client.SendTransaction(ctx, hub.name, fmt.Sprint("t", i), txn); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(txn.PDUs))/b.Elapsed().Seconds(), "pdus/s")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/txn")
}

// staticKeys is a KeyLookup over fixed keys, so that the benchmark measures verification and not key fetching.
type staticKeys map[string]ed25519.PublicKey

func (s staticKeys) VerifyKey(_ context.Context, serverName, keyID string) (ed25519.PublicKey, error) {
	if key, ok := s[serverName+" "+keyID]; ok {
		return key, nil
	}
	return nil, ErrUnknownKey
}
