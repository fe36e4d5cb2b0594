package ciphersuite

import (
	"fmt"
	"testing"
)

func BenchmarkHPKE(b *testing.B) {
	for _, id := range []ID{1, 2, 4} {
		s, _ := Lookup(id)
		priv, pub, _ := s.GenerateKeyPair()
		ctx, pt := make([]byte, 128), make([]byte, s.HashSize())
		kem, ct, _ := s.EncryptWithLabel(pub, "UpdatePathNode", ctx, pt)
		b.Run(fmt.Sprintf("encrypt/suite%d", id), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.EncryptWithLabel(pub, "UpdatePathNode", ctx, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("decrypt/suite%d", id), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.DecryptWithLabel(priv, "UpdatePathNode", ctx, kem, ct); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("derive/suite%d", id), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := s.DeriveKeyPair(pt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSignature(b *testing.B) {
	for _, id := range []ID{1, 2, 4} {
		s, _ := Lookup(id)
		priv, pub, _ := s.GenerateSignatureKeyPair()
		msg := make([]byte, 256)
		sig, _ := s.SignWithLabel(priv, "FramedContentTBS", msg)
		b.Run(fmt.Sprintf("sign/suite%d", id), func(b *testing.B) {
			for b.Loop() {
				if _, err := s.SignWithLabel(priv, "FramedContentTBS", msg); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("verify/suite%d", id), func(b *testing.B) {
			for b.Loop() {
				if err := s.VerifyWithLabel(pub, "FramedContentTBS", msg, sig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
