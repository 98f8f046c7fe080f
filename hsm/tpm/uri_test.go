//go:build !notpm

package tpm_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/tetherd/tether/hsm/tpm"
)

// Ensures that tpm: references parse into one key and device, and that
// typos and unsafe forms are refused with what to write instead.
func TestParseURI(t *testing.T) {
	tests := []struct {
		in      string
		want    tpm.URI
		wantErr string
	}{
		{in: "tpm:file=/etc/tether/device.tss2", want: tpm.URI{File: "/etc/tether/device.tss2", Device: tpm.DefaultDevice}},
		{in: "tpm:handle=0x81000002?device=/run/swtpm.sock&pin-source=file:/etc/tether/pin",
			want: tpm.URI{Handle: 0x81000002, Device: "/run/swtpm.sock", PINSource: "file:/etc/tether/pin"}},
		{in: "tpm:file=/a%20b%3Bc%25.tss2?pin-source=credential:tpm-pin", want: tpm.URI{File: "/a b;c%.tss2", Device: tpm.DefaultDevice, PINSource: "credential:tpm-pin"}},
		{in: "tpm:handle=2164260866", want: tpm.URI{Handle: 0x81000002, Device: tpm.DefaultDevice}},
		{in: "tpm:", wantErr: "names no key"},
		{in: "tpm:handle=0x80000001", wantErr: "not a persistent handle"},
		{in: "tpm:handle=0x82000000", wantErr: "not a persistent handle"},
		{in: "tpm:handle=device", wantErr: "not a number"},
		{in: "tpm:file=/k;handle=0x81000001", wantErr: "keep one"},
		{in: "tpm:fiel=/k", wantErr: `unknown attribute "fiel"`},
		{in: "tpm:file=/k?devcie=/dev/tpm0", wantErr: `unknown query attribute "devcie"`},
		{in: "tpm:file=/k?pin-value=1234", wantErr: "pin-value= is not accepted"},
		{in: "tpm:file", wantErr: "has no '='"},
		{in: "tpm:file=", wantErr: "file is empty"},
		{in: "tpm:file=/k?device=", wantErr: "device is empty"},
		{in: "tpm:file=/k?pin-source=file:/p&pin-value", wantErr: "pin-value"},
		{in: "tpm:file=/k%zz", wantErr: "percent-encoding"},
		{in: "/etc/tether/device.tss2", wantErr: `must start with "tpm:"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			u, err := tpm.ParseURI(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, tpm.ErrSyntax) {
					t.Fatalf("ParseURI(%q) = %v, want ErrSyntax containing %q", tt.in, err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "1234") {
					t.Fatalf("error leaks the pin-value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *u != tt.want {
				t.Fatalf("ParseURI(%q) = %+v, want %+v", tt.in, *u, tt.want)
			}
			again, err := tpm.ParseURI(u.String())
			if err != nil || *again != *u {
				t.Fatalf("String() %q does not parse back: %+v, %v", u.String(), again, err)
			}
		})
	}
}
