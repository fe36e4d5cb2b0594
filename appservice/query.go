package appservice

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// QueryHandler answers the homeserver's questions about users and aliases in our namespaces. The bridge sets one;
// until then only the bot exists.
type QueryHandler interface {
	// QueryUser says whether a ghost user ID stands for a real LM user; when it does, the ghost is registered before
	// the homeserver gets its answer.
	QueryUser(ctx context.Context, userID id.UserID) (bool, error)
	// QueryAlias says whether an alias in our namespace exists; when it does, the handler creates the room and sets
	// the alias before returning.
	QueryAlias(ctx context.Context, alias id.RoomAlias) (bool, error)
}

// SetQueryHandler installs the handler for user and alias queries.
func (as *AppService) SetQueryHandler(qh QueryHandler) {
	as.queryHandler.Store(&qh)
}

func (as *AppService) getUser(w http.ResponseWriter, r *http.Request) {
	if !as.checkHSToken(w, r) {
		return
	}
	userID := id.UserID(r.PathValue("userID"))
	if userID == as.botUserID {
		exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
		return
	}
	if !as.IsGhost(userID) {
		mautrix.MNotFound.WithMessage("%s is not in lmbridge's user namespace", userID).Write(w)
		return
	}
	qh := as.queryHandler.Load()
	if qh == nil {
		mautrix.MNotFound.WithMessage("No LM user is known for %s", userID).Write(w)
		return
	}
	ctx := r.Context()
	exists, err := (*qh).QueryUser(ctx, userID)
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Stringer("user_id", userID).Msg("Failed to answer user query")
		mautrix.MUnknown.WithMessage("Failed to look up %s", userID).Write(w)
		return
	} else if !exists {
		mautrix.MNotFound.WithMessage("No LM user is known for %s", userID).Write(w)
		return
	}
	intent, err := as.Ghost(userID)
	if err == nil {
		err = intent.EnsureRegistered(ctx)
	}
	if err != nil {
		zerolog.Ctx(ctx).Err(err).Stringer("user_id", userID).Msg("Failed to register queried ghost")
		mautrix.MUnknown.WithMessage("Failed to register %s", userID).Write(w)
		return
	}
	exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
}

func (as *AppService) getRoomAlias(w http.ResponseWriter, r *http.Request) {
	if !as.checkHSToken(w, r) {
		return
	}
	alias := id.RoomAlias(r.PathValue("roomAlias"))
	if !as.inAliasNamespace(alias) {
		mautrix.MNotFound.WithMessage("%s is not in lmbridge's alias namespace", alias).Write(w)
		return
	}
	qh := as.queryHandler.Load()
	if qh == nil {
		mautrix.MNotFound.WithMessage("No room is known for %s", alias).Write(w)
		return
	}
	exists, err := (*qh).QueryAlias(r.Context(), alias)
	if err != nil {
		zerolog.Ctx(r.Context()).Err(err).Stringer("alias", alias).Msg("Failed to answer alias query")
		mautrix.MUnknown.WithMessage("Failed to look up %s", alias).Write(w)
	} else if !exists {
		mautrix.MNotFound.WithMessage("No room is known for %s", alias).Write(w)
	} else {
		exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
	}
}

func (as *AppService) postPing(w http.ResponseWriter, r *http.Request) {
	if !as.checkHSToken(w, r) {
		return
	}
	body, err := httpguard.ReadBody(w, r, 64<<10)
	var refusal *httpguard.Refusal
	if errors.As(err, &refusal) {
		refusal.Write(w, r)
		return
	} else if err != nil || !json.Valid(body) {
		mautrix.MNotJSON.WithMessage("Ping body is not valid JSON").Write(w)
		return
	} else if !utf8.Valid(body) {
		mautrix.MNotJSON.WithMessage("Ping body is not valid UTF-8").Write(w)
		return
	}
	var req mautrix.ReqAppservicePing
	if err = json.Unmarshal(body, &req); err != nil {
		mautrix.MBadJSON.WithMessage("Ping body must be an object with a string transaction_id").Write(w)
		return
	}
	zerolog.Ctx(r.Context()).Debug().Str("txn_id", req.TxnID).Msg("Received ping from homeserver")
	exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
}

func (as *AppService) getLive(w http.ResponseWriter, _ *http.Request) {
	writeHealth(w, as.live.Load())
}

func (as *AppService) getReady(w http.ResponseWriter, _ *http.Request) {
	writeHealth(w, as.ready.Load())
}

func writeHealth(w http.ResponseWriter, ok bool) {
	if ok {
		exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
	} else {
		exhttp.WriteEmptyJSONResponse(w, http.StatusServiceUnavailable)
	}
}

func (as *AppService) unrecognized(w http.ResponseWriter, r *http.Request) {
	// Whatever body it has is not read.
	httpguard.CloseAfterAnswer(w, r)
	mautrix.MUnrecognized.WithMessage("Unrecognized endpoint %s %s", r.Method, r.URL.Path).Write(w)
}
