package bridge

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
)

var _ appservice.QueryHandler = (*Bridge)(nil)

// QueryUser says whether a ghost user ID stands for an LM user: any ID that decodes to a user of another LM server
// does (LM has no profile lookup to ask that server), so that inviting @lm_bob=remote.example:hs in a client works
// before the bridge has seen bob. Our own LM users never get ghosts: they are Matrix users already.
func (br *Bridge) QueryUser(_ context.Context, userID id.UserID) (bool, error) {
	lmUser, ok := br.users.GhostLMUser(userID)
	if br.mimi != nil && br.mimi.users.IsOurLMUser(lmUser) {
		return false, nil
	}
	return ok && !br.users.IsOurLMUser(lmUser), nil
}

// QueryAlias says no: LM rooms are not reachable through aliases yet; link them with !lm link … via ….
func (br *Bridge) QueryAlias(context.Context, id.RoomAlias) (bool, error) {
	return false, nil
}
