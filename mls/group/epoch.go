package group

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/framing"
	"github.com/lmbridge/lmbridge/mls/keyschedule"
	"github.com/lmbridge/lmbridge/mls/wire"
)

func interimHash(s *ciphersuite.Suite, confirmed, confirmationTag []byte) []byte {
	return framing.InterimTranscriptHash(s, confirmed, confirmationTag)
}

func nextEpoch(s *ciphersuite.Suite, initSecret, commitSecret, pskSecret, groupContext []byte) *keyschedule.Epoch {
	return keyschedule.Next(s, initSecret, commitSecret, pskSecret, groupContext)
}

func receiveExternalInit(g *Group, externalPriv, kemOutput []byte) ([]byte, error) {
	return keyschedule.ReceiveExternalInitSecret(g.suite, externalPriv, kemOutput)
}

// pskSecret finds each PSK's value and combines them (§8.4).
func (g *Group) pskSecret(ids []wire.PreSharedKeyID) ([]byte, error) {
	return pskSecretFrom(g.suite, ids, g.cfg.PSKs, g.resumptionPSK)
}

func (g *Group) resumptionPSK(id *wire.PreSharedKeyID) ([]byte, bool) {
	if id.Usage != wire.UsageApplication || string(id.GroupID) != string(g.ctx.GroupID) {
		return nil, false
	}
	for _, r := range g.resumption {
		if r.epoch == id.Epoch {
			return r.secret, true
		}
	}
	return nil, false
}

func pskSecretFrom(s *ciphersuite.Suite, ids []wire.PreSharedKeyID, store PSKStore, resumption func(*wire.PreSharedKeyID) ([]byte, bool)) ([]byte, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	psks := make([]keyschedule.PSK, len(ids))
	for i := range ids {
		id := &ids[i]
		var secret []byte
		ok := false
		switch id.Type {
		case wire.PSKExternal:
			if store != nil {
				secret, ok = store.ExternalPSK(id.ID)
			}
		case wire.PSKResumption:
			if resumption != nil {
				secret, ok = resumption(id)
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: PSK %d of type %d", ErrUnknownPSK, i, id.Type)
		}
		psks[i] = keyschedule.PSK{ID: codec.Marshal(id), Secret: secret}
	}
	return keyschedule.PSKSecret(s, psks)
}
