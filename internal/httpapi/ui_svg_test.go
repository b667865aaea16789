package httpapi

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
)

// graphOf makes n commands named c0… with the dependencies deps gives
// (indices of earlier commands).
func graphOf(n int, deps func(i int) []int) []spinbroker.Command {
	cmds := make([]spinbroker.Command, n)
	for i := range cmds {
		cmds[i] = spinbroker.Command{ID: fmt.Sprintf("c%d", i), Action: "act", Resource: "r", State: spinbroker.Ready}
		for _, j := range deps(i) {
			cmds[i].Dependencies = append(cmds[i].Dependencies, cmds[j].ID)
		}
	}
	return cmds
}

// TestGraph_WideLayersWrap: a fan-in of 64 and a fan-out of 20 are drawn in
// rows of four boxes, without boxes overlapping and without
// an edge's straight runs crossing a box, where they were drawn as wide as
// all their boxes side by side (a 65-command fan-in was 12,000 px).
func TestGraph_WideLayersWrap(t *testing.T) {
	const maxWidth = 2*12 + 4*(172+22) - 22 // four boxes side by side, which the page shows without scrolling
	shapes := map[string][]spinbroker.Command{
		"fan-in of 64": graphOf(65, func(i int) []int {
			if i < 64 {
				return nil
			}
			var all []int
			for j := range 64 {
				all = append(all, j)
			}
			return all
		}),
		"fan-out of 20, then a fan-in": graphOf(22, func(i int) []int {
			switch {
			case i == 0:
				return nil
			case i <= 20:
				return []int{0}
			}
			var all []int
			for j := 1; j <= 20; j++ {
				all = append(all, j)
			}
			return all
		}),
		"a chain beside many": graphOf(14, func(i int) []int {
			// c1 waits for c0 and c13 for c1: c13's edge from c1 skips no
			// layer, but c12… stay in layer 0 beside c0.
			switch i {
			case 1:
				return []int{0}
			case 13:
				return []int{1}
			}
			return nil
		}),
	}
	for name, cmds := range shapes {
		t.Run(name, func(t *testing.T) {
			g := newGraph(cmds)
			if g == nil {
				t.Fatal("no graph")
			}
			if g.Width > maxWidth {
				t.Errorf("width %d, want at most %d (rows of four)", g.Width, maxWidth)
			}
			if len(g.Nodes) != len(cmds) {
				t.Fatalf("%d nodes for %d commands", len(g.Nodes), len(cmds))
			}
			for i, a := range g.Nodes {
				if a.X < 0 || a.Y < 0 || a.X+a.W > g.Width || a.Y+a.H > g.Height {
					t.Errorf("node %s at (%d,%d) is outside the %d×%d picture", a.ID, a.X, a.Y, g.Width, g.Height)
				}
				for _, b := range g.Nodes[i+1:] {
					if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
						t.Errorf("nodes %s and %s overlap", a.ID, b.ID)
					}
				}
			}
			// Each edge, curves and straight runs, passes beside every box,
			// not through one: sampled along its way.
			for _, e := range g.Edges {
				for _, p := range along(t, e.D) {
					for _, n := range g.Nodes {
						if p[0] > float64(n.X) && p[0] < float64(n.X+n.W) && p[1] > float64(n.Y) && p[1] < float64(n.Y+n.H) {
							t.Errorf("edge %q runs through node %s at (%.0f,%.0f)", e.D, n.ID, p[0], p[1])
							break
						}
					}
				}
			}
		})
	}
}

// along samples an SVG path of M, C and L commands with whole numbers, as
// newGraph draws them, at points along its way.
func along(t *testing.T, d string) [][2]float64 {
	t.Helper()
	var pts [][2]float64
	var x, y float64
	for _, m := range regexp.MustCompile(`([MCL])([-\d ]+)`).FindAllStringSubmatch(d, -1) {
		var v []float64
		for _, f := range strings.Fields(m[2]) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("path %q: %v", d, err)
			}
			v = append(v, float64(n))
		}
		switch {
		case m[1] == "M" && len(v) == 2:
			x, y = v[0], v[1]
		case m[1] == "L" && len(v) == 2:
			for i := 1; i <= 32; i++ {
				f := float64(i) / 32
				pts = append(pts, [2]float64{x + f*(v[0]-x), y + f*(v[1]-y)})
			}
			x, y = v[0], v[1]
		case m[1] == "C" && len(v) == 6:
			for i := 1; i <= 32; i++ {
				f := float64(i) / 32
				g := 1 - f
				pts = append(pts, [2]float64{
					g*g*g*x + 3*g*g*f*v[0] + 3*g*f*f*v[2] + f*f*f*v[4],
					g*g*g*y + 3*g*g*f*v[1] + 3*g*f*f*v[3] + f*f*f*v[5],
				})
			}
			x, y = v[4], v[5]
		default:
			t.Fatalf("path %q: cannot read %q", d, m[0])
		}
	}
	return pts
}

// TestChart_ScaleLabelFits: the label of the chart's top gridline fits in
// the 34 units left of the plot, at any rate a broker reaches. It was the
// whole number, right-aligned at x=34: "20000" began at x=-4, its first
// digit cut off, and a claim-driven broker's million a minute showed as
// "00000".
func TestChart_ScaleLabelFits(t *testing.T) {
	for _, tt := range []struct {
		peak int
		want string
	}{
		{0, "1"}, {7, "10"}, {150, "200"}, {999, "1k"}, {1001, "2k"}, {20000, "20k"},
		{450000, "500k"}, {1_500_000, "2M"}, {20_000_000, "20M"},
	} {
		c := newChart(time.Unix(0, 0), []spinbroker.Counts{{Succeeded: tt.peak}}, time.Unix(60, 0))
		if c.MaxLabel != tt.want {
			t.Errorf("a peak of %d is labelled %q, want %q", tt.peak, c.MaxLabel, tt.want)
		}
		if len(c.MaxLabel) > 4 {
			t.Errorf("a peak of %d is labelled %q: more than 4 characters, cut off left of the plot", tt.peak, c.MaxLabel)
		}
	}
}

func TestCutReason(t *testing.T) {
	long := strings.Repeat("ü", 200) // 400 bytes, no space
	for _, tc := range []struct {
		name, reason, head string
		cut                bool
	}{
		{"Short", "disk full", "disk full", false},
		{"ThreeLines", "a\nb\nc", "a\nb\nc", false},
		{"FourLines", "a\nb\nc\nd", "a\nb\nc", true},
		{"LongWords", strings.Repeat("word ", 100), strings.TrimSuffix(strings.Repeat("word ", 48), " "), true},
		{"NoSpace", long, long[:previewBytes], true},
		{"Bidi", "ok\u202eevil", "ok⟨U+202E⟩evil", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cutReason(&tc.reason)
			if got.Head != tc.head || (got.Full != "") != tc.cut {
				t.Errorf("cutReason(%q) = %q, full %t; want %q, full %t", tc.reason, got.Head, got.Full != "", tc.head, tc.cut)
			}
			if !utf8.ValidString(got.Head) {
				t.Errorf("head %q cuts a character", got.Head)
			}
			if tc.cut && got.Full != shown(tc.reason) {
				t.Errorf("full %q, want the whole reason", got.Full)
			}
		})
	}
}

// TestGraphLabel: a box's label is "key · action" in at most 22 runes, as
// before the key was set apart; the key comes alone so that the template
// can isolate it, and a label cut short ends in "…".
func TestGraphLabel(t *testing.T) {
	for _, tc := range []struct {
		name, key, action, wantKey, wantRest string
	}{
		{"NoKey", "", "create_image", "", "create_image"},
		{"LongAction", "", "a_very_long_action_name_indeed", "", "a_very_long_action_na…"},
		{"Fits", "vol", "add_volume", "vol", " · add_volume"},
		{"RightToLeft", "מפתח!", "create_image", "מפתח!", " · create_image"},
		{"ActionCut", "disk", "create_image_from_url", "disk", " · create_image_f…"},
		{"ActionCutAtSpace", "a-long-key-of-18ch", "create", "a-long-key-of-18ch", " ·…"},
		{"KeyCut", "a-very-long-key-of-thirty-runes", "start", "a-very-long-key-of-th…", ""},
		{"Bidi", "k\u202eyek", "go", "k⟨U+202E⟩yek", " · go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := spinbroker.Command{Action: tc.action}
			if tc.key != "" {
				c.Key = &tc.key
			}
			key, rest := label(c, 22)
			if key != tc.wantKey || rest != tc.wantRest {
				t.Errorf("label(%q, %q) = %q, %q; want %q, %q", tc.key, tc.action, key, rest, tc.wantKey, tc.wantRest)
			}
			if n := utf8.RuneCountInString(key + rest); n > 22 {
				t.Errorf("label(%q, %q) is %d runes, more than 22", tc.key, tc.action, n)
			}
		})
	}
}

// TestChart_MinutesSayUTC: the tooltip of each minute of the completions
// chart gives its time zone, as every other time on the dashboard does: a
// bare "02:16" reads as local time to anyone east or west of Greenwich.
func TestChart_MinutesSayUTC(t *testing.T) {
	since := time.Date(2026, 1, 2, 2, 16, 0, 0, time.FixedZone("CET", 3600))
	c := newChart(since, []spinbroker.Counts{{Succeeded: 1}, {Failed: 2}}, since.Add(2*time.Minute))
	for i, want := range []string{"01:16 UTC: 1 succeeded, 0 failed, 0 cancelled", "01:17 UTC: 0 succeeded, 2 failed, 0 cancelled"} {
		if got := c.Bars[i].Title; got != want {
			t.Errorf("minute %d: %q, want %q", i, got, want)
		}
	}
}
