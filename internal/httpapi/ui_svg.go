package httpapi

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	spinbroker "github.com/spin-broker/spinbroker"
)

// The two pictures the server draws: the completions chart and a package's
// dependency graph. Go computes the geometry; the templates write it out as
// inline SVG, so html/template escapes every label and the page needs no
// script to show them.

// chart is the completions of the last hour: one stacked bar per minute.
type chart struct {
	Width, Height int
	Bars          []chartBar
	Max           int    // the value of the top gridline
	MaxLabel      string // Max as its label, short enough for the 34 units left of the plot
	MaxY, MidY    float64
	Base          float64 // the y of the zero line
	Left, Right   float64 // the plot area's x extent
	Ticks         []chartTick
	Total         spinbroker.Counts
	Desc          string
}

type chartBar struct {
	X, W  float64
	Title string
	Segs  []chartSeg
}

type chartSeg struct {
	Y, H  float64
	State string
}

type chartTick struct {
	X     float64
	Label string
	// Anchor is the label's text-anchor: the first starts at the plot's
	// left edge, clear of the y axis's "0" beside it, the last ("now")
	// ends at its right edge, the others are centred on their minute.
	Anchor string
}

// newChart lays out per-minute counts that start with the minute since.
func newChart(since time.Time, minutes []spinbroker.Counts, now time.Time) chart {
	c := chart{Width: 640, Height: 150, Left: 40, Right: 632, Base: 118}
	top := 12.0
	peak := 0
	for _, m := range minutes {
		peak = max(peak, m.Done())
		c.Total.Succeeded += m.Succeeded
		c.Total.Failed += m.Failed
		c.Total.Cancelled += m.Cancelled
	}
	c.Max = niceCeil(peak)
	c.MaxLabel = compactCount(c.Max)
	c.MaxY, c.MidY = top, top+(c.Base-top)/2
	n := len(minutes)
	if n == 0 {
		return c
	}
	slot := (c.Right - c.Left) / float64(n)
	scale := (c.Base - top) / float64(c.Max)
	for i, m := range minutes {
		b := chartBar{X: c.Left + float64(i)*slot + slot*0.1, W: slot * 0.8}
		at := since.Add(time.Duration(i) * time.Minute)
		b.Title = fmt.Sprintf("%s UTC: %d succeeded, %d failed, %d cancelled", at.UTC().Format("15:04"), m.Succeeded, m.Failed, m.Cancelled)
		y := c.Base
		for _, s := range []struct {
			state string
			n     int
		}{{"succeeded", m.Succeeded}, {"failed", m.Failed}, {"cancelled", m.Cancelled}} {
			if s.n == 0 {
				continue
			}
			h := float64(s.n) * scale
			y -= h
			b.Segs = append(b.Segs, chartSeg{Y: y, H: h, State: s.state})
		}
		c.Bars = append(c.Bars, b)
	}
	for _, ago := range []int{60, 45, 30, 15, 0} {
		t := chartTick{X: c.Left + float64(n-ago)*slot, Label: fmt.Sprintf("−%dm", ago), Anchor: "middle"}
		switch {
		case ago == 0:
			t.X, t.Label, t.Anchor = c.Right, "now", "end"
		case ago == 60:
			t.Anchor = "start"
		}
		c.Ticks = append(c.Ticks, t)
	}
	c.Desc = fmt.Sprintf("In the %d minutes up to %s UTC: %d succeeded, %d failed, %d cancelled; at most %d in one minute.",
		n, now.UTC().Format("15:04"), c.Total.Succeeded, c.Total.Failed, c.Total.Cancelled, peak)
	return c
}

// compactCount writes one of niceCeil's round numbers in at most four
// characters: "500", "20k", "2M".
func compactCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.Itoa(n/1_000_000) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// niceCeil rounds a chart's peak up to 1, 2 or 5 times a power of ten, so
// the gridlines read as round numbers.
func niceCeil(v int) int {
	if v <= 1 {
		return 1
	}
	for p := 1; ; p *= 10 {
		for _, m := range []int{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
	}
}

// graphMax is the largest package whose graph is drawn; past it the picture
// is a wall of boxes and costs more to lay out than it tells.
const graphMax = 300

// graph is a package's dependency graph: commands as boxes in layers by
// dependency depth (the longest path from a command with no dependency in
// the package), arrows from each dependency to its dependent.
type graph struct {
	Width, Height int
	Nodes         []graphNode
	Edges         []graphEdge
}

type graphNode struct {
	X, Y, W, H int
	TextX      int // the first line: the key, isolated, then the action
	ActionY    int
	IconX      int // the second line: the state's symbol, then state and resource
	IconY      int
	DetailX    int
	DetailY    int
	ID         string
	Key        string // the key, when it has one; Key and Action are shortened to fit the box together
	Action     string // " · action" after a key, else the action
	Detail     string // state and resource, shortened
	State      spinbroker.CommandState
	Title      string // the tooltip: everything unshortened, but a reason by its first lines
}

type graphEdge struct {
	D     string // the SVG path
	State spinbroker.CommandState
}

const (
	nodeW, nodeH = 172, 46
	gapX, gapY   = 22, 44
	graphMargin  = 12
	// An edge that skips layers passes each one through a slot of its own
	// (a "dummy" node, as Sugiyama's method has it), so that it runs
	// between the boxes rather than through them.
	slotW      = 14
	maxDummies = 2000 // past this, long edges are drawn straight
	wrapCols   = 4    // boxes in a row of a wrapped layer
	rowGap     = 26   // between the rows of a wrapped layer
)

// slot is a box or an edge's passage through a layer.
type slot struct {
	cmd   int     // the command, or -1 for an edge's passage
	preds []int   // slots in the layer above that lead here
	x, y  int     // its top left corner once placed
	order float64 // its place in its layer, for ordering the next one
}

func (s *slot) width() int {
	if s.cmd < 0 {
		return slotW
	}
	return nodeW
}

// newGraph lays out cmds, which are in the order they were added. A
// dependency always exists before its dependent, so one pass in that order
// finds each command's depth. Dependencies on other packages' commands are
// not drawn; the page lists them.
func newGraph(cmds []spinbroker.Command) *graph {
	if len(cmds) == 0 || len(cmds) > graphMax {
		return nil
	}
	index := make(map[string]int, len(cmds))
	for i, c := range cmds {
		index[c.ID] = i
	}
	type edge struct{ from, to int }
	var edges []edge
	depth := make([]int, len(cmds))
	layers := 1
	dummies := 0
	for i, c := range cmds {
		for _, d := range c.Dependencies {
			if j, ok := index[d]; ok && j < i {
				depth[i] = max(depth[i], depth[j]+1)
				edges = append(edges, edge{j, i})
			}
		}
		layers = max(layers, depth[i]+1)
	}
	for _, e := range edges {
		dummies += depth[e.to] - depth[e.from] - 1
	}
	straight := dummies > maxDummies

	// Slots: one per command, then one per layer an edge passes through.
	slots := make([]*slot, len(cmds))
	byLayer := make([][]*slot, layers)
	for i := range cmds {
		slots[i] = &slot{cmd: i}
		byLayer[depth[i]] = append(byLayer[depth[i]], slots[i])
	}
	paths := make([][]*slot, len(edges)) // the passages of each edge, top down
	for k, e := range edges {
		prev := e.from
		if !straight {
			for l := depth[e.from] + 1; l < depth[e.to]; l++ {
				s := &slot{cmd: -1, preds: []int{prev}}
				slots = append(slots, s)
				byLayer[l] = append(byLayer[l], s)
				paths[k] = append(paths[k], s)
				prev = len(slots) - 1
			}
		}
		slots[e.to].preds = append(slots[e.to].preds, prev)
	}

	// Order each layer by the mean place of what leads into it, so that
	// arrows cross less; ties keep the order of addition.
	place := func(l []*slot) {
		for k, s := range l {
			s.order = float64(k) - float64(len(l)-1)/2
		}
	}
	place(byLayer[0])
	for _, l := range byLayer[1:] {
		for _, s := range l {
			sum := 0.0
			for _, p := range s.preds {
				sum += slots[p].order
			}
			s.order = sum / float64(max(len(s.preds), 1))
		}
		slices.SortStableFunc(l, func(a, b *slot) int {
			switch {
			case a.order < b.order:
				return -1
			case a.order > b.order:
				return 1
			}
			return 0
		})
		place(l)
	}

	// A layer of more than wrapCols commands and nothing else (a fan-out,
	// a fan-in's many dependencies) is wrapped into rows of wrapCols with
	// its boxes in columns, where it would have made the picture as wide
	// as all of them: edges to and from its inner rows run down the gaps
	// between the columns.
	rows := make([]int, layers)
	g := &graph{}
	for i, l := range byLayer {
		rows[i] = 1
		if len(l) > wrapCols && !slices.ContainsFunc(l, func(s *slot) bool { return s.cmd < 0 }) {
			rows[i] = (len(l) + wrapCols - 1) / wrapCols
		}
		g.Width = max(g.Width, 2*graphMargin+rowWidth(firstRow(l, rows[i])))
	}
	layerTop := make([]int, layers+1)
	layerTop[0] = graphMargin
	for i := range layers {
		layerTop[i+1] = layerTop[i] + rows[i]*(nodeH+rowGap) - rowGap + gapY
	}
	g.Height = layerTop[layers] - gapY + graphMargin
	for i, l := range byLayer {
		x0 := (g.Width - rowWidth(firstRow(l, rows[i]))) / 2
		if rows[i] > 1 {
			for k, s := range l {
				s.x = x0 + k%wrapCols*(nodeW+gapX)
				s.y = layerTop[i] + k/wrapCols*(nodeH+rowGap)
			}
			continue
		}
		for _, s := range l {
			s.x, s.y = x0, layerTop[i]
			x0 += s.width() + gapX
		}
	}
	for i, c := range cmds {
		x, y := slots[i].x, slots[i].y
		n := graphNode{
			X: x, Y: y, W: nodeW, H: nodeH,
			TextX: x + 10, ActionY: y + 19,
			IconX: x + 10, IconY: y + 26,
			DetailX: x + 27, DetailY: y + 36,
			ID:     c.ID,
			Detail: ellipsis(string(c.State)+" · "+c.Resource, 24),
			State:  c.State,
		}
		n.Key, n.Action = label(c, 22)
		n.Title = c.Action + " on " + c.Resource + ": " + string(c.State)
		if c.Key != nil {
			n.Title += " (key " + shown(*c.Key) + ")"
		}
		if c.Reason != nil {
			// Its first lines, as a table's cell quotes it: a box's
			// title is written twice (tooltip and aria-label), and 300
			// reasons of 64 KiB made the graph 39 MB. The command's
			// page, the box's link, has the whole.
			cut := cutReason(c.Reason)
			n.Title += " — " + cut.Head
			if cut.Full != "" {
				n.Title += "…"
			}
		}
		g.Nodes = append(g.Nodes, n)
	}
	// Each edge leaves the bottom of its dependency, runs down through its
	// passages, and ends with an arrowhead on top of its dependent. One
	// that leaves an inner row of a wrapped layer first runs down the gap
	// to the right of its box; one that enters an inner row, down the gap
	// to the left of its dependent's.
	for k, e := range edges {
		from, to := slots[e.from], slots[e.to]
		x, y := from.x+nodeW/2, from.y+nodeH
		var b strings.Builder
		fmt.Fprintf(&b, "M%d %d", x, y)
		curve := func(x2, y2 int) {
			mid := (y + y2) / 2
			fmt.Fprintf(&b, " C%d %d %d %d %d %d", x, mid, x2, mid, x2, y2)
			x, y = x2, y2
		}
		down := func(y2 int) {
			fmt.Fprintf(&b, " L%d %d", x, y2)
			y = y2
		}
		if bottom := layerTop[depth[e.from]+1] - gapY; y < bottom {
			curve(from.x+nodeW+gapX/2, y+rowGap/2)
			down(bottom)
		}
		for _, s := range paths[k] {
			curve(s.x+slotW/2, s.y)
			down(s.y + nodeH)
		}
		if top := layerTop[depth[e.to]]; to.y > top {
			curve(to.x-gapX/2, top)
			down(to.y - rowGap/2)
		}
		curve(to.x+nodeW/2, to.y-3) // room for the arrowhead
		g.Edges = append(g.Edges, graphEdge{D: b.String(), State: cmds[e.from].State})
	}
	return g
}

// rowWidth is the width of a row of slots side by side.
func rowWidth(row []*slot) int {
	w := 0
	for _, s := range row {
		w += s.width() + gapX
	}
	return w - gapX
}

// firstRow is the first row of a layer laid out in rows rows.
func firstRow(l []*slot, rows int) []*slot {
	if rows > 1 {
		return l[:wrapCols]
	}
	return l
}

// label is what a box of the graph calls its command, in at most n runes:
// its key first when it has one (commands of one action, side by side,
// differ by their keys alone), then " · " and its action. The two come
// apart because the key is the client's text, maybe right to left, and the
// template isolates it from what follows.
func label(c spinbroker.Command, n int) (key, rest string) {
	if c.Key == nil || *c.Key == "" {
		return "", ellipsis(c.Action, n)
	}
	key, rest = shown(*c.Key), " · "+c.Action
	k := utf8.RuneCountInString(key)
	if k+utf8.RuneCountInString(rest) <= n {
		return key, rest
	}
	if k >= n-1 {
		return ellipsis(key, n), ""
	}
	return key, strings.TrimRightFunc(string([]rune(rest)[:n-1-k]), unicode.IsSpace) + "…"
}

// ellipsis shortens s to at most n runes.
func ellipsis(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimSpace(string(r[:n-1])) + "…"
}
