package federation

import (
	"encoding/json"
	"reflect"
	"testing"
)

var splitTransactionSeeds = []string{
	`{}`,
	`{"pdus":[]}`,
	`{"pdus":[{"a":1},{"b":"x,]}"}],"edus":[{"edu_type":"m.typing","content":{}}]}`,
	` { "origin" : "a.example" , "origin_server_ts" : 12 , "pdus" : [ {"x":[1,2,{"y":"\"]"}]} , 3 , null , "s" , true ] } `,
	`{"origin_server_ts":1.5e3,"pdus":[{"k":false}],"extra":{"pdus":[1]},"n":null}`,
	`{"pdus":null}`,
	`{"pdus":{}}`,
	`{"pdus":"x"}`,
	`{"PDUs":[{"a":1}]}`,
	`{"pduſ":[{"a":1}]}`,
	`{"pdus":[{"a":1}],"pdus":[{"b":2}]}`,
	`{"pd\u0075s":[{"a":1}]}`,
	`{"edus":[1],"EDUS":[2]}`,
	`{"a":"\\","pdus":[{"\\\"":"\\"}]}`,
	`{"pdus":[[],[[]],{}],"edus":[]}`,
	`{"pdus":[-0.5e-3,1E+2,"é"]}`,
}

// checkSplitTransaction compares the fast path with encoding/json on a body json.Valid accepts as an object: where
// the fast path answers, it must give exactly what encoding/json gives; where it declines, encoding/json decides.
func checkSplitTransaction(t *testing.T, body []byte) {
	if !json.Valid(body) {
		return
	}
	var fast Transaction
	if !splitTransaction(body, &fast) {
		return
	}
	var slow Transaction
	if err := json.Unmarshal(body, &slow); err != nil {
		t.Fatalf("fast path accepted %q, encoding/json refused it: %v", body, err)
	}
	if !reflect.DeepEqual(fast, slow) {
		t.Fatalf("%q: fast path gave %q, encoding/json %q", body, fast, slow)
	}
}

func TestSplitTransactionMatchesEncodingJSON(t *testing.T) {
	var answered int
	for _, seed := range splitTransactionSeeds {
		checkSplitTransaction(t, []byte(seed))
		var txn Transaction
		if splitTransaction([]byte(seed), &txn) {
			answered++
		}
	}
	// The plain shapes must take the fast path, or it saves nothing.
	for _, plain := range []string{`{}`, `{"pdus":[]}`, splitTransactionSeeds[2], splitTransactionSeeds[3], splitTransactionSeeds[4]} {
		var txn Transaction
		if !splitTransaction([]byte(plain), &txn) {
			t.Errorf("fast path declined the plain body %q", plain)
		}
	}
	// The shapes encoding/json reads differently must not.
	for _, odd := range []string{`{"pdus":null}`, `{"pdus":{}}`, `{"PDUs":[{"a":1}]}`, `{"pduſ":[{"a":1}]}`,
		`{"pdus":[{"a":1}],"pdus":[{"b":2}]}`, `{"pd\u0075s":[{"a":1}]}`, `{"edus":[1],"EDUS":[2]}`} {
		var txn Transaction
		if splitTransaction([]byte(odd), &txn) {
			t.Errorf("fast path answered %q, which encoding/json must decide", odd)
		}
	}
	if answered == 0 {
		t.Fatal("the fast path answered nothing")
	}
}

func FuzzSplitTransaction(f *testing.F) {
	for _, seed := range splitTransactionSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) == 0 || body[0] != '{' {
			return
		}
		checkSplitTransaction(t, body)
	})
}
