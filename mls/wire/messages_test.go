package wire

import (
	"bytes"
	"testing"

	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/internal/vectors"
)

type messagesCase struct {
	MLSWelcome                     vectors.Hex `json:"mls_welcome"`
	MLSGroupInfo                   vectors.Hex `json:"mls_group_info"`
	MLSKeyPackage                  vectors.Hex `json:"mls_key_package"`
	RatchetTree                    vectors.Hex `json:"ratchet_tree"`
	GroupSecrets                   vectors.Hex `json:"group_secrets"`
	AddProposal                    vectors.Hex `json:"add_proposal"`
	UpdateProposal                 vectors.Hex `json:"update_proposal"`
	RemoveProposal                 vectors.Hex `json:"remove_proposal"`
	PreSharedKeyProposal           vectors.Hex `json:"pre_shared_key_proposal"`
	ReInitProposal                 vectors.Hex `json:"re_init_proposal"`
	ExternalInitProposal           vectors.Hex `json:"external_init_proposal"`
	GroupContextExtensionsProposal vectors.Hex `json:"group_context_extensions_proposal"`
	Commit                         vectors.Hex `json:"commit"`
	PublicMessageApplication       vectors.Hex `json:"public_message_application"`
	PublicMessageProposal          vectors.Hex `json:"public_message_proposal"`
	PublicMessageCommit            vectors.Hex `json:"public_message_commit"`
	PrivateMessage                 vectors.Hex `json:"private_message"`
}

type value interface {
	codec.Marshaler
	codec.Unmarshaler
}

// mlsMessage checks that a decoded MLSMessage has the expected body.
func mlsMessage(wf WireFormat, ct ContentType) func(*testing.T, value) {
	return func(t *testing.T, v value) {
		m := v.(*MLSMessage)
		if m.WireFormat() != wf {
			t.Errorf("wire format %d, want %d", m.WireFormat(), wf)
		}
		if ct != 0 && m.PublicMessage.Content.ContentType != ct {
			t.Errorf("content type %d, want %d", m.PublicMessage.Content.ContentType, ct)
		}
	}
}

func TestMessagesVectors(t *testing.T) {
	var cases []messagesCase
	if err := vectors.Load("messages.json", &cases); err != nil {
		t.Fatal(err)
	}
	type field struct {
		name  string
		data  []byte
		new   func() value
		check func(*testing.T, value)
	}
	passed, total := 0, 0
	for i, c := range cases {
		fields := []field{
			{"mls_welcome", c.MLSWelcome, func() value { return new(MLSMessage) }, mlsMessage(WireFormatWelcome, 0)},
			{"mls_group_info", c.MLSGroupInfo, func() value { return new(MLSMessage) }, mlsMessage(WireFormatGroupInfo, 0)},
			{"mls_key_package", c.MLSKeyPackage, func() value { return new(MLSMessage) }, mlsMessage(WireFormatKeyPackage, 0)},
			{"ratchet_tree", c.RatchetTree, func() value { return new(RatchetTree) }, nil},
			{"group_secrets", c.GroupSecrets, func() value { return new(GroupSecrets) }, nil},
			{"add_proposal", c.AddProposal, func() value { return new(Add) }, nil},
			{"update_proposal", c.UpdateProposal, func() value { return new(Update) }, nil},
			{"remove_proposal", c.RemoveProposal, func() value { return new(Remove) }, nil},
			{"pre_shared_key_proposal", c.PreSharedKeyProposal, func() value { return new(PreSharedKey) }, nil},
			{"re_init_proposal", c.ReInitProposal, func() value { return new(ReInit) }, nil},
			{"external_init_proposal", c.ExternalInitProposal, func() value { return new(ExternalInit) }, nil},
			{"group_context_extensions_proposal", c.GroupContextExtensionsProposal, func() value { return new(GroupContextExtensions) }, nil},
			{"commit", c.Commit, func() value { return new(Commit) }, nil},
			{"public_message_application", c.PublicMessageApplication, func() value { return new(MLSMessage) }, mlsMessage(WireFormatPublicMessage, ContentApplication)},
			{"public_message_proposal", c.PublicMessageProposal, func() value { return new(MLSMessage) }, mlsMessage(WireFormatPublicMessage, ContentProposal)},
			{"public_message_commit", c.PublicMessageCommit, func() value { return new(MLSMessage) }, mlsMessage(WireFormatPublicMessage, ContentCommit)},
			{"private_message", c.PrivateMessage, func() value { return new(MLSMessage) }, mlsMessage(WireFormatPrivateMessage, 0)},
		}
		for _, f := range fields {
			total++
			if len(f.data) == 0 {
				t.Errorf("case %d %s: empty in the vector", i, f.name)
				continue
			}
			v := f.new()
			if err := codec.Unmarshal(f.data, v); err != nil {
				t.Errorf("case %d %s: decode: %v", i, f.name, err)
				continue
			}
			if got := codec.Marshal(v); !bytes.Equal(got, f.data) {
				t.Errorf("case %d %s: re-encoding differs (%d bytes, want %d)", i, f.name, len(got), len(f.data))
				continue
			}
			if f.check != nil {
				f.check(t, v)
			}
			passed++
		}
	}
	t.Logf("messages.json: %d cases, %d/%d values decode and re-encode identically", len(cases), passed, total)
}
