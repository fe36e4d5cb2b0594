package config

import (
	"errors"
	"strings"
	"testing"
)

func TestMIMIIsOffByDefault(t *testing.T) {
	cfg, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MIMI.Enabled() || cfg.MIMI.Listen != "0.0.0.0:8449" {
		t.Fatalf("mimi defaults: %+v", cfg.MIMI)
	}
}

func TestMIMIValidation(t *testing.T) {
	const tls = "    tls_cert: c.pem\n    tls_key: k.pem\n    tls_ca: ca.pem\n"
	ok := "mimi:\n    domain: mimi.example\n    listen: 127.0.0.1:8449\n" + tls + "    peers:\n        other.example: 127.0.0.1:9000\n"
	cfg, err := Parse([]byte(minimal + ok))
	if err != nil {
		t.Fatalf("a complete mimi section: %v", err)
	}
	if !cfg.MIMI.Enabled() || cfg.MIMI.Peers["other.example"] != "127.0.0.1:9000" {
		t.Fatalf("mimi section: %+v", cfg.MIMI)
	}
	for _, tc := range []struct {
		name, yaml, wantKey string
	}{
		{"domain with a port", "mimi:\n    domain: mimi.example:443\n" + tls, "mimi.domain"},
		{"listen without a port", "mimi:\n    domain: mimi.example\n    listen: 127.0.0.1\n" + tls, "mimi.listen"},
		{"no certificate", "mimi:\n    domain: mimi.example\n    tls_key: k.pem\n    tls_ca: ca.pem\n", "mimi.tls_cert"},
		{"no CA", "mimi:\n    domain: mimi.example\n    tls_cert: c.pem\n    tls_key: k.pem\n", "mimi.tls_ca"},
		{"public URL over HTTP", "mimi:\n    domain: mimi.example\n    public_url: http://mimi.example\n" + tls, "mimi.public_url"},
		{"peer without a port", "mimi:\n    domain: mimi.example\n" + tls + "    peers:\n        other.example: other\n", "mimi.peers.other.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal + tc.yaml))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("err = %v, want ErrInvalid naming %s", err, tc.wantKey)
			}
		})
	}
}
