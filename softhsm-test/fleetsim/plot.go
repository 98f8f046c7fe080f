package fleetsim

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// binWidth is the width of the plot's rate bins.
const binWidth = 10 * time.Second

// Plot draws each result as one panel of a PNG at path with gnuplot (Debian
// package gnuplot-nox): requests per second (served, refused, failed during
// the outage) against the limit, and the share of the fleet holding valid
// credentials or a connection.
func Plot(path string, rs ...*Result) error {
	gnuplot, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("fleetsim: gnuplot not found: install the Debian package gnuplot-nox")
	}
	dir, err := os.MkdirTemp("", "fleetsim-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var script strings.Builder
	fmt.Fprintf(&script, "set terminal pngcairo size 1400,%d font 'sans,10'\nset output %q\n", 420*len(rs), path)
	fmt.Fprintf(&script, "set multiplot layout %d,1\nset xlabel 'hours'\nset ylabel 'requests per second (%v bins)'\nset y2label 'share of the fleet (%%)'\nset y2range [0:105]\nset ytics nomirror\nset y2tics\nset key outside right top\nset grid\n", len(rs), binWidth)
	for i, r := range rs {
		rates := filepath.Join(dir, fmt.Sprintf("rates%d", i))
		valid := filepath.Join(dir, fmt.Sprintf("valid%d", i))
		if err := os.WriteFile(rates, r.rateBins(), 0o600); err != nil {
			return err
		}
		var vb bytes.Buffer
		for _, s := range r.Valid {
			fmt.Fprintf(&vb, "%.5f %.3f\n", s.At.Hours(), 100*s.Share)
		}
		if err := os.WriteFile(valid, vb.Bytes(), 0o600); err != nil {
			return err
		}
		title := fmt.Sprintf("%s: %d agents, limit %d/s", r.Name, r.Agents, r.Limit)
		fmt.Fprintf(&script, "set title %q\nset logscale y\nset yrange [0.1:*]\n", title)
		fmt.Fprintf(&script, "plot %q using 1:2 with lines lw 1.5 lc rgb '#1b9e77' title 'served', "+
			"%q using 1:3 with lines lw 1 lc rgb '#d95f02' title 'refused (429)', "+
			"%q using 1:4 with lines lw 1 lc rgb '#7570b3' title 'failed (outage)', "+
			"%d with lines dt 2 lc rgb 'black' title 'limit', "+
			"%q using 1:2 axes x1y2 with lines lw 2 lc rgb '#e7298a' title 'holding valid credentials / connected'\n",
			rates, rates, rates, r.Limit, valid)
	}
	script.WriteString("unset multiplot\n")
	sf := filepath.Join(dir, "plot.gp")
	if err := os.WriteFile(sf, []byte(script.String()), 0o600); err != nil {
		return err
	}
	if out, err := exec.Command(gnuplot, sf).CombinedOutput(); err != nil {
		return fmt.Errorf("fleetsim: gnuplot: %v: %s", err, out)
	}
	return nil
}

// rateBins is the mean requests per second in each bin: hours, served,
// refused, down.
func (r *Result) rateBins() []byte {
	var b bytes.Buffer
	per := int(binWidth / time.Second)
	for start := 0; start < len(r.Counts); start += per {
		var sum [3]int
		for sec := start; sec < start+per && sec < len(r.Counts); sec++ {
			for k := range sum {
				sum[k] += r.Counts[sec][k]
			}
		}
		fmt.Fprintf(&b, "%.5f %.2f %.2f %.2f\n", (time.Duration(start) * time.Second).Hours(),
			float64(sum[Served])/float64(per), float64(sum[Refused])/float64(per), float64(sum[Down])/float64(per))
	}
	return b.Bytes()
}
