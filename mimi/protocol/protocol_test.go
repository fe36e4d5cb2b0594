package protocol

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// vectorMessages are real MLS messages from the MLS working group's messages.json vectors
// (mls/testdata/vectors), to put inside the MIMI bodies.
type vectorMessages struct {
	private, proposal, commit, welcome, groupInfo, keyPackage wire.MLSMessage
	tree                                                      wire.RatchetTree
}

func loadVectors(t testing.TB) *vectorMessages {
	t.Helper()
	raw, err := os.ReadFile("../../mls/testdata/vectors/messages.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []map[string]string
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	c := cases[0]
	v := &vectorMessages{}
	for key, dst := range map[string]codec.Unmarshaler{
		"private_message": &v.private, "public_message_proposal": &v.proposal, "public_message_commit": &v.commit,
		"mls_welcome": &v.welcome, "mls_group_info": &v.groupInfo, "mls_key_package": &v.keyPackage, "ratchet_tree": &v.tree,
	} {
		b, err := hex.DecodeString(c[key])
		if err != nil {
			t.Fatal(err)
		}
		if err := codec.Unmarshal(b, dst); err != nil {
			t.Fatalf("vector %s: %v", key, err)
		}
	}
	// The vector's PrivateMessage may frame a handshake message; the MIMI submit endpoint
	// takes application messages, and the ciphertext is opaque to this layer anyway.
	v.private.PrivateMessage.ContentType = wire.ContentApplication
	return v
}

type roundTripper interface {
	Encode() ([]byte, error)
}

func roundTrip[T any](t *testing.T, name string, v roundTripper, dec func([]byte) (*T, error)) []byte {
	t.Helper()
	b, err := v.Encode()
	if err != nil {
		t.Fatalf("%s: encode: %v", name, err)
	}
	got, err := dec(b)
	if err != nil {
		t.Fatalf("%s: decode: %v", name, err)
	}
	b2, err := any(got).(roundTripper).Encode()
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("%s: re-encoding differs: %v", name, err)
	}
	return b
}

func TestRoundTrips(t *testing.T) {
	v := loadVectors(t)
	suite, err := ciphersuite.Lookup(1)
	if err != nil {
		t.Fatal(err)
	}
	sigPriv, sigPub, err := suite.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	cred := wire.BasicCredential([]byte("mimi://a.example/u/alice"))

	kmr := &KeyMaterialRequest{RequestingUser: "mimi://a.example/u/alice", TargetUser: "mimi://b.example/u/bob", RoomID: "mimi://hub.example/r/room",
		AcceptableCiphersuites: []uint16{1, 3}, RequiredCapabilities: wire.RequiredCapabilities{Proposals: []wire.ProposalType{8}},
		RequesterSignatureKey: sigPub, RequesterCredential: cred}
	if err := kmr.Sign(suite, sigPriv); err != nil {
		t.Fatal(err)
	}
	b := roundTrip(t, "key material request", kmr, DecodeKeyMaterialRequest)
	got, _ := DecodeKeyMaterialRequest(b)
	if err := got.Verify(suite); err != nil {
		t.Errorf("decoded request does not verify: %v", err)
	}
	got.RoomID = "mimi://hub.example/r/other"
	if err := got.Verify(suite); !errors.Is(err, wire.ErrInvalidSignature) {
		t.Errorf("request for another room verifies: %v", err)
	}

	caps := v.keyPackage.KeyPackage.LeafNode.Capabilities
	roundTrip(t, "key material response", &KeyMaterialResponse{UserStatus: UserPartialSuccess, UserURI: "mimi://b.example/u/bob", Clients: []ClientKeyMaterial{
		{Status: ClientSuccess, ClientURI: "mimi://b.example/d/1", KeyPackage: v.keyPackage.KeyPackage},
		{Status: ClientKeyMaterialExhausted, ClientURI: "mimi://b.example/d/2"},
		{Status: ClientNothingCompatible, ClientURI: "mimi://b.example/d/3", Capability: &caps},
		{Status: ClientNothingCompatible, ClientURI: "mimi://b.example/d/4"},
	}}, DecodeKeyMaterialResponse)

	welcome := v.welcome.Welcome
	roundTrip(t, "update (commit, full group info, full tree)", &UpdateRequest{ProposalOrCommit: v.commit, Welcome: welcome,
		GroupInfoOption:   GroupInfoOption{Representation: GroupInfoFull, GroupInfo: v.groupInfo.GroupInfo},
		RatchetTreeOption: RatchetTreeOption{Representation: TreeFull, Tree: v.tree}}, DecodeUpdateRequest)
	roundTrip(t, "update (commit, partial group info, tree by URL)", &UpdateRequest{ProposalOrCommit: v.commit,
		GroupInfoOption:   GroupInfoOption{Representation: GroupInfoPartial, Partial: &PartialGroupInfo{RatchetTreePresence: RatchetTreePresent, Signature: []byte{1, 2}}},
		RatchetTreeOption: RatchetTreeOption{Representation: TreeHTTPSURI, URL: []byte("https://hub.example/tree/1"), TreeSignature: []byte{3}}}, DecodeUpdateRequest)
	roundTrip(t, "update (proposals)", &UpdateRequest{ProposalOrCommit: v.proposal, MoreProposals: []wire.MLSMessage{v.proposal, v.proposal}}, DecodeUpdateRequest)
	for _, resp := range []*UpdateRoomResponse{
		{Code: UpdateSuccess, AcceptedTimestamp: 1644387225019},
		{Code: UpdateWrongEpoch, ErrorDescription: "epoch 7 is current", CurrentEpoch: 7},
		{Code: UpdateNotAllowed, ErrorDescription: "not allowed"},
		{Code: UpdateInvalidProposal, InvalidProposals: [][]byte{{1, 2, 3}, {4}}},
	} {
		roundTrip(t, "update response", resp, DecodeUpdateRoomResponse)
	}

	roundTrip(t, "submit message", &SubmitMessageRequest{AppMessage: v.private, SendingURI: "mimi://a.example/u/alice"}, DecodeSubmitMessageRequest)
	frank := &Frank{FrankingSignatureCiphersuite: 1, FrankingIntegritySignature: []byte{9, 9}}
	frank.ServerFrank[0] = 0xaa
	for _, resp := range []*SubmitMessageResponse{
		{Code: SubmitAccepted, AcceptedTimestamp: 5, Frank: frank}, {Code: SubmitAccepted, AcceptedTimestamp: 6},
		{Code: SubmitNotAllowed}, {Code: SubmitEpochTooOld, CurrentEpoch: 3},
	} {
		roundTrip(t, "submit response", resp, DecodeSubmitMessageResponse)
	}

	fanout := []FanoutMessage{
		{Timestamp: 1, Message: v.private, Frank: frank},
		{Timestamp: 2, Message: v.private},
		{Timestamp: 3, Message: v.welcome, RatchetTreeOption: &RatchetTreeOption{Representation: TreeDistributionService}},
		{Timestamp: 4, Message: v.proposal, MoreProposals: []wire.MLSMessage{v.proposal}},
		{Timestamp: 5, Message: v.commit, ExternalProposals: []wire.MLSMessage{}},
	}
	body, err := EncodeFanout(fanout)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := DecodeFanout(body)
	if err != nil || len(msgs) != 5 {
		t.Fatalf("fanout: %d messages, %v", len(msgs), err)
	}
	if again, _ := EncodeFanout(msgs); !bytes.Equal(again, body) {
		t.Errorf("fanout re-encoding differs")
	}
	if msgs[0].Frank == nil || msgs[0].Frank.ServerFrank != frank.ServerFrank || msgs[1].Frank != nil || msgs[2].RatchetTreeOption.Representation != TreeDistributionService {
		t.Errorf("fanout fields: %+v", msgs)
	}

	hpkePriv, hpkePub, err := suite.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	gir := &GroupInfoRequest{CipherSuite: 1, RequestingSignatureKey: sigPub, RequestingCredential: cred, GroupInfoPublicKey: hpkePub, JoiningCode: []byte("code")}
	if err := gir.Sign(suite, sigPriv); err != nil {
		t.Fatal(err)
	}
	gb := roundTrip(t, "group info request", gir, DecodeGroupInfoRequest)
	gotReq, _ := DecodeGroupInfoRequest(gb)
	if err := gotReq.Verify(suite); err != nil {
		t.Errorf("group info request does not verify: %v", err)
	}
	gotReq.JoiningCode = nil
	if err := gotReq.Verify(suite); !errors.Is(err, wire.ErrInvalidSignature) {
		t.Errorf("request without its joining code verifies: %v", err)
	}

	hubPriv, hubPub, err := suite.GenerateSignatureKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	resp := &GroupInfoResponse{RoomID: []byte("mimi://hub.example/r/room"), HubSender: wire.ExternalSender{SignatureKey: hubPub, Credential: wire.BasicCredential([]byte("hub.example"))}}
	tbe := &GroupInfoRatchetTreeTBE{GroupInfo: *v.groupInfo.GroupInfo, RatchetTreeOption: RatchetTreeOption{Representation: TreeFull, Tree: v.tree},
		PendingProposals: []PendingProposal{{Proposal: v.proposal, HubAcceptedTime: 42}}}
	if err := resp.Seal(suite, hpkePub, tbe, hubPriv); err != nil {
		t.Fatal(err)
	}
	rb := roundTrip(t, "group info response", resp, DecodeGroupInfoResponse)
	gotResp, _ := DecodeGroupInfoResponse(rb)
	opened, err := gotResp.Open(suite, hpkePriv)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	want, _ := encode("tbe", tbe)
	if gotTBE, _ := encode("tbe", opened); !bytes.Equal(gotTBE, want) {
		t.Errorf("opened group info differs")
	}
	gotResp.RoomID = []byte("mimi://hub.example/r/other")
	if _, err := gotResp.Open(suite, hpkePriv); !errors.Is(err, wire.ErrInvalidSignature) {
		t.Errorf("response for another room opens: %v", err)
	}
	for _, code := range []GroupInfoCode{GroupInfoNotAuthorized, GroupInfoNoSuchRoom} {
		roundTrip(t, "group info failure", &GroupInfoResponse{RoomID: []byte("r"), Status: code}, DecodeGroupInfoResponse)
	}
}

// TestLayouts pins encodings worked out by hand from the draft's TLS structs.
func TestLayouts(t *testing.T) {
	cases := []struct {
		name string
		v    roundTripper
		want string
	}{
		{"submit accepted, no frank", &SubmitMessageResponse{Code: SubmitAccepted, AcceptedTimestamp: 0x0102030405060708}, "01 00 0102030405060708 00"},
		{"submit not allowed", &SubmitMessageResponse{Code: SubmitNotAllowed}, "01 01"},
		{"submit epoch too old", &SubmitMessageResponse{Code: SubmitEpochTooOld, CurrentEpoch: 9}, "01 02 0000000000000009"},
		{"update not allowed", &UpdateRoomResponse{Code: UpdateNotAllowed, ErrorDescription: "no"}, "02 02 6e6f"},
		{"update invalid proposals", &UpdateRoomResponse{Code: UpdateInvalidProposal, InvalidProposals: [][]byte{{0xab}}}, "03 00 02 01ab"},
		{"key material user unknown", &KeyMaterialResponse{UserStatus: UserUnknown, UserURI: "u"}, "01 04 01 75 00"},
		{"group info not authorized", &GroupInfoResponse{RoomID: []byte("r"), Status: GroupInfoNotAuthorized}, "01 01 72 02"},
	}
	for _, c := range cases {
		b, err := c.v.Encode()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if want := strings.ReplaceAll(c.want, " ", ""); hex.EncodeToString(b) != want {
			t.Errorf("%s: %x, want %s", c.name, b, want)
		}
	}
}

func TestRejects(t *testing.T) {
	v := loadVectors(t)
	enc := func(m codec.Marshaler) []byte { return codec.Marshal(m) }
	mustHex := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	submit := enc(&SubmitMessageRequest{AppMessage: v.private, SendingURI: "u"})
	cases := []struct {
		name string
		dec  func([]byte) error
		in   []byte
		want error
	}{
		{"unknown protocol", decSubmitResp, mustHex("02 01"), ErrUnknownProtocol},
		{"reserved protocol", decSubmitResp, mustHex("00 01"), ErrUnknownProtocol},
		{"unknown submit code", decSubmitResp, mustHex("01 03"), ErrUnknownCode},
		{"truncated timestamp", decSubmitResp, mustHex("01 00 0102"), codec.ErrShort},
		{"bad optional byte", decSubmitResp, mustHex("01 00 0102030405060708 02"), codec.ErrInvalidOptional},
		{"trailing byte", decSubmitResp, mustHex("01 01 00"), codec.ErrTrailingBytes},
		{"unknown update code", decUpdateResp, mustHex("04 00"), ErrUnknownCode},
		{"unknown user code", decKMResp, mustHex("01 08 00 00"), ErrUnknownCode},
		{"unknown client code", decKMResp, mustHex("01 00 00 02 03 00"), ErrUnknownCode},
		{"clients with user unknown", decKMResp, mustHex("01 04 00 02 01 00"), ErrUnexpectedField},
		{"no ciphersuites", decKMReq, enc(&KeyMaterialRequest{RequesterCredential: wire.BasicCredential([]byte("a"))}), ErrUnexpectedField},
		{"group info request of another protocol", decGIReq, mustHex("05 0001"), ErrUnknownProtocol},
		{"group info request truncated", decGIReq, mustHex("01 0001 05 01"), codec.ErrShort},
		{"reserved group info code", decGIResp, mustHex("01 00 00"), ErrUnknownCode},
		{"unknown group info code", decGIResp, mustHex("01 00 04"), ErrUnknownCode},
		{"submit of a PublicMessage", decSubmit, enc(&SubmitMessageRequest{AppMessage: v.proposal, SendingURI: "u"}), ErrWrongMessage},
		{"submit truncated", decSubmit, submit[:len(submit)-1], codec.ErrShort},
		{"update with a PrivateMessage", decUpdate, enc(&v.private), ErrWrongMessage},
		{"update with a Welcome", decUpdate, enc(&v.welcome), ErrWrongMessage},
		{"more proposals holding a commit", decUpdate, enc(&UpdateRequest{ProposalOrCommit: v.proposal, MoreProposals: []wire.MLSMessage{v.commit}}), ErrWrongMessage},
		{"commit without group info", decUpdate, append(enc(&v.commit), 0x00, 0x03), ErrUnknownCode},
		{"unknown tree representation", decUpdate, append(enc(&v.commit), 0x00, 0x02, 0x00, 0x00, 0x00, 0x07), ErrUnknownCode},
		{"fanout of a KeyPackage", decFanout, append(mustHex("0000000000000001"), enc(&v.keyPackage)...), ErrWrongMessage},
		{"fanout of a GroupInfo", decFanout, append(mustHex("0000000000000001"), enc(&v.groupInfo)...), ErrWrongMessage},
		{"empty notify body", decFanout, nil, ErrWrongMessage},
		{"notify body cut in the second message", decFanout, func() []byte {
			b, _ := EncodeFanout([]FanoutMessage{{Timestamp: 1, Message: v.private}, {Timestamp: 2, Message: v.private}})
			return b[:len(b)-3]
		}(), codec.ErrShort},
	}
	for _, c := range cases {
		if err := c.dec(c.in); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Encoders refuse to write what the decoders refuse.
	for name, v := range map[string]roundTripper{
		"unknown update code":       &UpdateRoomResponse{Code: 9},
		"update without a message":  &UpdateRequest{},
		"full group info but none":  &UpdateRequest{ProposalOrCommit: v.commit, GroupInfoOption: GroupInfoOption{Representation: GroupInfoFull}, RatchetTreeOption: RatchetTreeOption{Representation: TreeOutOfBand}},
		"key package missing":       &KeyMaterialResponse{UserStatus: UserSuccess, Clients: []ClientKeyMaterial{{Status: ClientSuccess}}},
		"clients for a failed user": &KeyMaterialResponse{UserStatus: UserNoConsent, Clients: []ClientKeyMaterial{{Status: ClientKeyMaterialExhausted}}},
	} {
		if _, err := v.Encode(); err == nil {
			t.Errorf("%s: encoded", name)
		}
	}
}

func decSubmitResp(b []byte) error { _, err := DecodeSubmitMessageResponse(b); return err }
func decSubmit(b []byte) error     { _, err := DecodeSubmitMessageRequest(b); return err }
func decUpdateResp(b []byte) error { _, err := DecodeUpdateRoomResponse(b); return err }
func decUpdate(b []byte) error     { _, err := DecodeUpdateRequest(b); return err }
func decKMResp(b []byte) error     { _, err := DecodeKeyMaterialResponse(b); return err }
func decKMReq(b []byte) error      { _, err := DecodeKeyMaterialRequest(b); return err }
func decGIResp(b []byte) error     { _, err := DecodeGroupInfoResponse(b); return err }
func decGIReq(b []byte) error      { _, err := DecodeGroupInfoRequest(b); return err }
func decFanout(b []byte) error     { _, err := DecodeFanout(b); return err }

func TestDirectory(t *testing.T) {
	// The draft's example, with its two typos fixed (a missing ':' after "proxyDownload"
	// and a missing '/' in the update template).
	doc := `{
  "keyMaterial": "https://mimi.example.com/v1/keyMaterial/{targetUser}",
  "update": "https://mimi.example.com/v1/update/{roomId}",
  "notify": "https://mimi.example.com/v1/notify/{roomId}",
  "submitMessage": "https://mimi.example.com/v1/submitMessage/{roomId}",
  "groupInfo": "https://mimi.example.com/v1/groupInfo/{roomId}",
  "requestConsent": "https://mimi.example.com/v1/requestConsent/{targetUser}",
  "updateConsent": "https://mimi.example.com/v1/updateConsent/{requesterUser}",
  "identifierQuery": "https://mimi.example.com/v1/identifierQuery/{domain}",
  "reportAbuse": "https://mimi.example.com/v1/reportAbuse/{roomId}",
  "proxyDownload": "https://mimi.example.com/v1/proxyDownload/{downloadUrl}",
  "meta": {"note": "unknown members are ignored"}
}`
	d, err := ParseDirectory([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	u, err := Expand(d.Notify, map[string]string{"roomId": "mimi://hub.example/r/Rl33FWLCYWOwxHrYnpWDQg"})
	if err != nil || u != "https://mimi.example.com/v1/notify/mimi:%2F%2Fhub.example%2Fr%2FRl33FWLCYWOwxHrYnpWDQg" {
		t.Errorf("expand: %q, %v", u, err)
	}
	if _, err := Expand(d.Notify, nil); !errors.Is(err, ErrBadDirectory) {
		t.Errorf("expand without value: %v", err)
	}
	if _, err := Expand("https://x/{roomId", map[string]string{"roomId": "r"}); !errors.Is(err, ErrBadDirectory) {
		t.Errorf("expand unterminated: %v", err)
	}
	literal := strings.Replace(doc, `"proxyDownload":`, `"proxyDownload"`, 1)
	for name, in := range map[string]string{
		"draft's literal example": literal,
		"missing notify":          strings.Replace(doc, `"notify"`, `"notified"`, 1),
		"http endpoint":           strings.Replace(doc, "https://mimi.example.com/v1/update", "http://mimi.example.com/v1/update", 1),
		"not an object":           `[]`,
		"two documents":           doc + doc,
	} {
		if _, err := ParseDirectory([]byte(in)); !errors.Is(err, ErrBadDirectory) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if !reflect.DeepEqual(d.ProxyDownload, "https://mimi.example.com/v1/proxyDownload/{downloadUrl}") {
		t.Errorf("proxyDownload %q", d.ProxyDownload)
	}
}

// FuzzDecode: no decoder panics, and whatever one accepts re-encodes to the input.
func FuzzDecode(f *testing.F) {
	v := loadVectors(f)
	for _, m := range []codec.Marshaler{
		&SubmitMessageRequest{AppMessage: v.private, SendingURI: "u"},
		&SubmitMessageResponse{Code: SubmitAccepted, Frank: &Frank{}},
		&UpdateRequest{ProposalOrCommit: v.proposal, MoreProposals: []wire.MLSMessage{v.proposal}},
		&UpdateRequest{ProposalOrCommit: v.commit, GroupInfoOption: GroupInfoOption{Representation: GroupInfoPartial, Partial: &PartialGroupInfo{}}, RatchetTreeOption: RatchetTreeOption{Representation: TreeOutOfBand}},
		&UpdateRoomResponse{Code: UpdateInvalidProposal, InvalidProposals: [][]byte{{1}}},
		&KeyMaterialResponse{UserStatus: UserSuccess, Clients: []ClientKeyMaterial{{Status: ClientSuccess, KeyPackage: v.keyPackage.KeyPackage}}},
		&KeyMaterialRequest{AcceptableCiphersuites: []uint16{1}},
		&GroupInfoRequest{JoiningCode: []byte("x")},
		&GroupInfoResponse{Status: GroupInfoSuccess},
		&FanoutMessage{Message: v.welcome, RatchetTreeOption: &RatchetTreeOption{Representation: TreeFull, Tree: v.tree}},
		&ConsentEntry{Operation: ConsentGrant, RequesterURI: "mimi://a/u/x", TargetURI: "mimi://b/u/y", RoomID: "mimi://a/r/z",
			ClientKeyPackages: []*wire.KeyPackage{v.keyPackage.KeyPackage}, Extensions: []Component{{1, []byte{2}}, {3, nil}}},
		&ConsentEntry{Operation: ConsentRequest, RequesterURI: "mimi://a/u/x", TargetURI: "mimi://b/u/y"},
		&IdentifierRequest{Elements: []QueryElement{{Type: SearchHandle, Value: "im:y@b"}, {Type: SearchVCardField, Name: "ORG", Value: "b"}}},
		&IdentifierResponse{Code: IdentifierSuccess, URIs: []string{"mimi://b/u/y"},
			Profiles: []UserProfile{{StableURI: "mimi://b/u/y", Fields: []ProfileField{{Source: 7, Name: "given_name", Value: []byte("Y")}}}}},
		&GroupInfoRatchetTreeTBE{GroupInfo: *v.groupInfo.GroupInfo, RatchetTreeOption: RatchetTreeOption{Representation: TreeFull, Tree: v.tree}},
	} {
		f.Add(codec.Marshal(m))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		check := func(name string, v roundTripper, err error) {
			if err != nil {
				return
			}
			out, err := v.Encode()
			if err != nil || !bytes.Equal(out, b) {
				t.Fatalf("%s accepted %x but re-encodes to %x (%v)", name, b, out, err)
			}
		}
		a, err := DecodeSubmitMessageRequest(b)
		check("submit", a, err)
		c, err := DecodeSubmitMessageResponse(b)
		check("submit response", c, err)
		d, err := DecodeUpdateRequest(b)
		check("update", d, err)
		e, err := DecodeUpdateRoomResponse(b)
		check("update response", e, err)
		g, err := DecodeKeyMaterialRequest(b)
		check("key material", g, err)
		h, err := DecodeKeyMaterialResponse(b)
		check("key material response", h, err)
		i, err := DecodeGroupInfoRequest(b)
		check("group info", i, err)
		j, err := DecodeGroupInfoResponse(b)
		check("group info response", j, err)
		if msgs, err := DecodeFanout(b); err == nil {
			if out, err := EncodeFanout(msgs); err != nil || !bytes.Equal(out, b) {
				t.Fatalf("fanout accepted %x but re-encodes to %x (%v)", b, out, err)
			}
		}
		if msgs, raw, err := DecodeFanoutRaw(b); err == nil {
			if len(raw) != len(msgs) || !bytes.Equal(bytes.Join(raw, nil), b) {
				t.Fatalf("fanout spans of %x do not make up the body", b)
			}
			for i := range msgs {
				if out, err := EncodeFanout(msgs[i : i+1]); err != nil || !bytes.Equal(out, raw[i]) {
					t.Fatalf("fanout message %d of %x is not its span", i, b)
				}
			}
		}
		k, err := DecodeConsentEntry(b)
		check("consent", k, err)
		l, err := DecodeIdentifierRequest(b)
		check("identifier request", l, err)
		m, err := DecodeIdentifierResponse(b)
		check("identifier response", m, err)
		var tbe GroupInfoRatchetTreeTBE
		if err := codec.Unmarshal(b, &tbe); err == nil {
			if out := codec.Marshal(&tbe); !bytes.Equal(out, b) {
				t.Fatalf("GroupInfoRatchetTreeTBE accepted %x but re-encodes to %x", b, out)
			}
		}
	})
}

// FuzzParseDirectory: the directory parser never panics, and what it accepts lists the required endpoints as https
// templates.
func FuzzParseDirectory(f *testing.F) {
	f.Add([]byte(`{"keyMaterial":"https://a/v1/keyMaterial/{targetUser}","update":"https://a/v1/update/{roomId}","notify":"https://a/v1/notify/{roomId}","submitMessage":"https://a/v1/submitMessage/{roomId}","groupInfo":"https://a/v1/groupInfo/{roomId}","identifierQuery":"https://a/v1/identifierQuery/{domain}"}`))
	f.Add([]byte(`{"keyMaterial":"http://a"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDirectory(b)
		if err != nil {
			return
		}
		for _, tmpl := range []string{d.KeyMaterial, d.Update, d.Notify, d.SubmitMessage, d.GroupInfo} {
			if !strings.HasPrefix(tmpl, "https://") {
				t.Fatalf("accepted %q with endpoint %q", b, tmpl)
			}
		}
	})
}

// TestConsentAndIdentifierBodies: the consent and identifier-query bodies round-trip, and the decoders refuse what the
// draft's structures do not allow.
func TestConsentAndIdentifierBodies(t *testing.T) {
	v := loadVectors(t)
	grant := &ConsentEntry{Operation: ConsentGrant, RequesterURI: "mimi://a.example/u/alice", TargetURI: "mimi://b.example/u/bob",
		RoomID: "mimi://a.example/r/r1", ClientKeyPackages: []*wire.KeyPackage{v.keyPackage.KeyPackage}}
	b := roundTrip(t, "grant", grant, DecodeConsentEntry)
	got, _ := DecodeConsentEntry(b)
	if got.RoomID != grant.RoomID || len(got.ClientKeyPackages) != 1 {
		t.Fatalf("grant decoded as %+v", got)
	}
	// A request carries no key packages: the same bytes with the operation changed leave the vector unread.
	req := slices.Clone(b)
	req[0] = byte(ConsentRequest)
	if _, err := DecodeConsentEntry(req); err == nil {
		t.Fatal("a request with a grant's key packages decoded")
	}
	roundTrip(t, "any-room request", &ConsentEntry{Operation: ConsentRequest, RequesterURI: "mimi://a.example/u/alice", TargetURI: "mimi://b.example/u/bob"}, DecodeConsentEntry)
	q := &IdentifierRequest{Elements: []QueryElement{{Type: SearchHandle, Value: "im:bob@b.example"}, {Type: SearchOIDCStdClaim, Name: "family_name", Value: "B"}}}
	roundTrip(t, "identifier request", q, DecodeIdentifierRequest)
	roundTrip(t, "identifier response", &IdentifierResponse{Code: IdentifierSuccess, URIs: []string{"mimi://b.example/u/bob"}}, DecodeIdentifierResponse)
	for name, body := range map[string][]byte{
		"operation 4":                {4, 1, 'a', 1, 'b', 0, 0},
		"empty requester":            {byte(ConsentRequest), 0, 1, 'b', 0, 0},
		"present but empty room":     {byte(ConsentRequest), 1, 'a', 1, 'b', 1, 0, 0},
		"unsorted extensions":        {byte(ConsentCancel), 1, 'a', 1, 'b', 0, 6, 0, 2, 0, 0, 1, 0},
		"no query elements":          {0, 0},
		"search type 9":              {3, 9, 1, 'x', 0},
		"not-found with results":     {byte(IdentifierNotFound), 2, 1, 'u', 0, 0},
		"profile field of source 1":  {0, 0, 6, 1, 'u', 3, 1, 0, 0, 0},
		"identifier response code 5": {5, 0, 0, 0},
	} {
		_, e1 := DecodeConsentEntry(body)
		_, e2 := DecodeIdentifierRequest(body)
		_, e3 := DecodeIdentifierResponse(body)
		if e1 == nil || e2 == nil || e3 == nil {
			t.Errorf("%s (%x) decoded: consent %v, request %v, response %v", name, body, e1, e2, e3)
		}
	}
}
