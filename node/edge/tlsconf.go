// TLS for the client port and for relays, from the node's files. The client port's
// certificate, key and CAs are re-read when any of them changes (checked at each
// handshake by size and modification time), so a rotated certificate is served to new
// connections without a restart; a half-written set is refused and the previous one kept.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
)

type reloadingTLS struct {
	cert, key string
	cas       []string // set: clients must present a certificate one of them signed
	mu        sync.Mutex
	stamp     string
	config    *tls.Config
}

func newReloadingTLS(cert, key string, cas []string) (*reloadingTLS, error) {
	r := &reloadingTLS{cert: cert, key: key, cas: cas}
	if _, err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reloadingTLS) files() []string { return append([]string{r.cert, r.key}, r.cas...) }

func stampOf(paths []string) string {
	var sb strings.Builder
	for _, p := range paths {
		if info, err := os.Stat(p); err == nil {
			fmt.Fprintf(&sb, "%s:%d:%d;", p, info.Size(), info.ModTime().UnixNano())
		} else {
			fmt.Fprintf(&sb, "%s:missing;", p)
		}
	}
	return sb.String()
}

// load builds the server configuration from the files as they are now.
func (r *reloadingTLS) load() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(r.cert, r.key)
	if err != nil {
		return nil, fmt.Errorf("client TLS certificate %s / key %s: %w", r.cert, r.key, err)
	}
	config := &tls.Config{
		Certificates: []tls.Certificate{pair},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}
	if len(r.cas) > 0 {
		pool, err := loadPool(r.cas)
		if err != nil {
			return nil, err
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	r.config = config
	r.stamp = stampOf(r.files())
	return config, nil
}

// current returns the configuration for a new connection, re-read if the files changed.
func (r *reloadingTLS) current() *tls.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	if stampOf(r.files()) != r.stamp {
		previous := r.config
		if _, err := r.load(); err != nil {
			log.Printf("edge.tls_reload_failed error=%q (keeping the previous certificate)", err)
			r.config = previous
			r.stamp = stampOf(r.files()) // retried when the files change again
		} else {
			log.Printf("edge.tls_reloaded cert=%s", r.cert)
		}
	}
	return r.config
}

func loadPool(paths []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, p := range paths {
		pem, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no PEM certificate in %s", p)
		}
	}
	return pool, nil
}

// relayTLS: how a follower's edge reaches the leader's client port when it speaks TLS —
// verified against the cluster CA (the leader's certificate names its advertised client
// address), presenting this replica's peer certificate (re-read for each connection).
func relayTLS(ca, cert, key string) (*tls.Config, error) {
	pool, err := loadPool([]string{ca})
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		RootCAs:    pool,
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			pair, err := tls.LoadX509KeyPair(cert, key)
			if err != nil {
				return nil, err
			}
			return &pair, nil
		},
	}, nil
}
