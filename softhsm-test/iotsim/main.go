// Command iotsim runs the project's AWS IoT Core credentials provider
// simulator (package credprovider/iotcredtest) as a process, for `make demo`
// and for clients that are not Go (aws CLI, boto3 via tether):
//
//	go run ./softhsm-test/iotsim -listen 127.0.0.1:0 -ca ca.crt \
//	    -cert server.crt -key server.key -role-alias gateway-role=1h
//
// It prints the address it listens on (host:port) as the first line of
// standard output, logs requests to standard error, and stops on SIGINT or
// SIGTERM. softhsm-test/pki.sh makes suitable files.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tetherd/tether/credprovider"
	"github.com/tetherd/tether/credprovider/iotcredtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "iotsim:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// run serves until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("iotsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	certFile := fs.String("cert", "", "server certificate (PEM)")
	keyFile := fs.String("key", "", "server private key (PEM)")
	handshake := fs.Bool("handshake-verify", false, "reject untrusted device certificates in the TLS handshake instead of with HTTP 403")
	var cas, aliases listFlag
	fs.Var(&cas, "ca", "CA whose device certificates are accepted (PEM; repeatable)")
	fs.Var(&aliases, "role-alias", "role alias NAME=LIFETIME, e.g. gateway-role=1h (repeatable)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if *certFile == "" || *keyFile == "" || len(cas) == 0 || len(aliases) == 0 {
		fs.Usage()
		return fmt.Errorf("%w: -cert, -key, at least one -ca and one -role-alias are required", errUsage)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("%w: -cert %s / -key %s: %w", errUsage, *certFile, *keyFile, err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	opts := []iotcredtest.Option{
		iotcredtest.WithAddr(*listen), iotcredtest.WithServerCertificate(cert), iotcredtest.WithLogger(log),
	}
	if *handshake {
		opts = append(opts, iotcredtest.WithHandshakeVerification())
	}
	for _, a := range aliases {
		name, life, ok := strings.Cut(a, "=")
		d, err := time.ParseDuration(life)
		// Below AWS's 15-minute minimum on purpose: seconds-long
		// credentials show refreshes in demos and tests.
		if !ok || name == "" || err != nil || d < 10*time.Second || d > credprovider.MaxIoTDuration {
			return fmt.Errorf("%w: -role-alias %q: want NAME=LIFETIME with LIFETIME from 10s to 12h", errUsage, a)
		}
		opts = append(opts, iotcredtest.WithRoleAlias(name, d))
	}
	s, err := iotcredtest.NewUnstartedServer(opts...)
	if err != nil {
		return err
	}
	for _, f := range cas {
		certs, err := readCerts(f)
		if err == nil && len(certs) == 0 {
			err = errors.New("no PEM CERTIFICATE block")
		}
		if err != nil {
			return fmt.Errorf("%w: -ca %s: %w", errUsage, f, err)
		}
		for _, c := range certs {
			s.TrustCA(c)
		}
	}
	if err := s.Start(); err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintln(stdout, s.Endpoint)
	log.Info("serving", "endpoint", s.Endpoint, "role_aliases", aliases.String())
	<-ctx.Done()
	return nil
}
