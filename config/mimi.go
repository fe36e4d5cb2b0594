package config

import (
	"net"
	"strings"
)

// MIMI is lmbridge as a MIMI provider (draft-ietf-mimi-protocol): the homeserver's users become its users, and
// Matrix rooms can be linked to MIMI rooms it hubs or follows. An empty domain leaves it off.
type MIMI struct {
	Domain    string `yaml:"domain"`
	Listen    string `yaml:"listen"`
	PublicURL string `yaml:"public_url"`
	TLSCert   string `yaml:"tls_cert"`
	TLSKey    string `yaml:"tls_key"`
	TLSCA     string `yaml:"tls_ca"`
	// Peers maps a provider's domain to the host:port its endpoints are reached at, instead of <domain>:443.
	Peers map[string]string `yaml:"peers"`
}

// Enabled says whether the config turns the MIMI provider on.
func (m *MIMI) Enabled() bool { return m.Domain != "" }

func (m *MIMI) validate(p *problems) {
	if !m.Enabled() {
		return
	}
	if strings.ContainsAny(m.Domain, "/:@ ") {
		p.add("mimi.domain", "must be a domain name, got %q", m.Domain)
	}
	if _, _, err := net.SplitHostPort(m.Listen); err != nil {
		p.add("mimi.listen", "must be host:port, got %q", m.Listen)
	}
	for key, v := range map[string]string{"mimi.tls_cert": m.TLSCert, "mimi.tls_key": m.TLSKey, "mimi.tls_ca": m.TLSCA} {
		if v == "" {
			p.add(key, "must be set when mimi.domain is: providers authenticate each other with mutual TLS")
		}
	}
	if m.PublicURL != "" && !strings.HasPrefix(m.PublicURL, "https://") {
		p.add("mimi.public_url", "must be an https:// URL, got %q", m.PublicURL)
	}
	for domain, addr := range m.Peers {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			p.add("mimi.peers."+domain, "must be host:port, got %q", addr)
		}
	}
}
