package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/tetherd/tether/agent/agenttest"
	"github.com/tetherd/tether/credprovider/imds"
)

// BenchmarkIMDSFetch: one SDK credentials fetch over the IMDS endpoint (PUT
// a token, GET the role's name, GET its credentials: what botocore and
// aws-sdk-go-v2 do at each refresh), median of 200 on a kept-alive
// connection, next to the same fetch over the container endpoint (one GET
// with the token file's token) of the same agent, in the same run.
func BenchmarkIMDSFetch(b *testing.B) {
	imdsPort, containerPort := agenttest.FreePort(b), agenttest.FreePort(b)
	e := agenttest.New(b, time.Hour, "")
	e.WriteConfig("", "[serve]\n", fmt.Sprintf("[serve]\nimds_endpoint = \"127.0.0.1:%d\"\ncontainer_endpoint = \"127.0.0.1:%d\"\n", imdsPort, containerPort))
	startAgentB(b, e)
	token, err := os.ReadFile(e.Token)
	if err != nil {
		b.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	do := func(method, url string, hdr ...string) string {
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, body)
		}
		return string(body)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", imdsPort)
	viaIMDS := func() time.Duration {
		t0 := time.Now()
		tok := do(http.MethodPut, base+imds.TokenPath, imds.TTLHeader, "21600")
		name := do(http.MethodGet, base+imds.CredentialsPath, imds.TokenHeader, tok)
		do(http.MethodGet, base+imds.CredentialsPath+name, imds.TokenHeader, tok)
		return time.Since(t0)
	}
	container := fmt.Sprintf("http://127.0.0.1:%d/2016-11-01/credentialprovider/", containerPort)
	viaContainer := func() time.Duration {
		t0 := time.Now()
		do(http.MethodGet, container, "Authorization", string(token))
		return time.Since(t0)
	}
	for b.Loop() {
		i := median(200, viaIMDS)
		c := median(200, viaContainer)
		b.ReportMetric(float64(i.Microseconds())/1000, "imds-fetch-ms")
		b.ReportMetric(float64(c.Microseconds())/1000, "container-fetch-ms")
		b.ReportMetric(float64(i)/float64(c), "ratio")
	}
}
