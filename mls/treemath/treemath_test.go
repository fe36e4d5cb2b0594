package treemath

import (
	"testing"

	"github.com/lmbridge/lmbridge/mls/internal/vectors"
)

func TestTreeMathVectors(t *testing.T) {
	var cases []struct {
		NLeaves uint32    `json:"n_leaves"`
		NNodes  uint32    `json:"n_nodes"`
		Root    NodeIndex `json:"root"`
		Left    []*NodeIndex
		Right   []*NodeIndex
		Parent  []*NodeIndex
		Sibling []*NodeIndex
	}
	if err := vectors.Load("tree-math.json", &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no cases")
	}
	check := func(n uint32, what string, x NodeIndex, want *NodeIndex, got NodeIndex) {
		t.Helper()
		// null in the vectors: a leaf has no children, the root no parent or
		// sibling; these functions return x itself then.
		w := x
		if want != nil {
			w = *want
		}
		if got != w {
			t.Errorf("n_leaves=%d %s(%d) = %d, want %d", n, what, x, got, w)
		}
	}
	for _, c := range cases {
		if got := NodeWidth(c.NLeaves); got != c.NNodes {
			t.Errorf("n_leaves=%d: width %d, want %d", c.NLeaves, got, c.NNodes)
		}
		if got := Root(c.NLeaves); got != c.Root {
			t.Errorf("n_leaves=%d: root %d, want %d", c.NLeaves, got, c.Root)
		}
		for i := range c.NNodes {
			x := NodeIndex(i)
			check(c.NLeaves, "left", x, c.Left[i], Left(x))
			check(c.NLeaves, "right", x, c.Right[i], Right(x))
			check(c.NLeaves, "parent", x, c.Parent[i], Parent(x, c.NLeaves))
			check(c.NLeaves, "sibling", x, c.Sibling[i], Sibling(x, c.NLeaves))
		}
	}
	if !t.Failed() {
		t.Logf("tree-math.json: %d/%d cases passed", len(cases), len(cases))
	}
}

func TestPaths(t *testing.T) {
	// 8 leaves: root 7; leaf 0 (node 0) has direct path 1, 3, 7.
	dp := DirectPath(0, 8)
	cp := Copath(0, 8)
	want := []NodeIndex{1, 3, 7}
	wantCp := []NodeIndex{2, 5, 11}
	for i := range want {
		if dp[i] != want[i] || cp[i] != wantCp[i] {
			t.Fatalf("direct path %v copath %v", dp, cp)
		}
	}
	if len(dp) != 3 || len(cp) != 3 || DirectPath(7, 8) != nil {
		t.Fatalf("direct path %v copath %v", dp, cp)
	}
}

func TestCommonAncestor(t *testing.T) {
	const n = 32
	for x := NodeIndex(0); x < NodeIndex(NodeWidth(n)); x++ {
		for y := NodeIndex(0); y < NodeIndex(NodeWidth(n)); y++ {
			// The lowest node whose subtree holds both, by search.
			var want NodeIndex
			for a := x; ; a = Parent(a, n) {
				if IsInSubtree(a, y) {
					want = a
					break
				}
			}
			if got := CommonAncestor(x, y); got != want {
				t.Fatalf("CommonAncestor(%d, %d) = %d, want %d", x, y, got, want)
			}
		}
	}
}
