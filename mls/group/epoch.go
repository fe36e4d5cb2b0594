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
	return pskSecretFrom(g.suite, ids, g.cfg, g)
}

// ResumptionPSK is the resumption PSK of one of this group's recent epochs
// (Config.MaxPastResumptionPSKs of them), so that a Group is the
// ResumptionStore of the groups a reinit or branch makes from it.
func (g *Group) ResumptionPSK(groupID []byte, epoch uint64) ([]byte, bool) {
	if string(groupID) != string(g.ctx.GroupID) {
		return nil, false
	}
	for _, r := range g.resumption {
		if r.epoch == epoch {
			return r.secret, true
		}
	}
	return nil, false
}

// pskSecretFrom finds each PSK, external ones in cfg.PSKs, resumption ones
// of the group itself (self, nil for a joiner) or else in cfg.Resumption.
func pskSecretFrom(s *ciphersuite.Suite, ids []wire.PreSharedKeyID, cfg Config, self *Group) ([]byte, error) {
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
			if cfg.PSKs != nil {
				secret, ok = cfg.PSKs.ExternalPSK(id.ID)
			}
		case wire.PSKResumption:
			if self != nil && id.Usage == wire.UsageApplication {
				secret, ok = self.ResumptionPSK(id.GroupID, id.Epoch)
			}
			if !ok && cfg.Resumption != nil {
				secret, ok = cfg.Resumption.ResumptionPSK(id.GroupID, id.Epoch)
			}
		}
		if !ok {
			return nil, fmt.Errorf("%w: PSK %d of type %d", ErrUnknownPSK, i, id.Type)
		}
		psks[i] = keyschedule.PSK{ID: codec.Marshal(id), Secret: secret}
	}
	return keyschedule.PSKSecret(s, psks)
}
