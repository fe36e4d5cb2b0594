package config

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
)

// Warnings lists settings that are valid but probably not what the operator meant, each naming its keys. They are
// printed by -g and logged at start-up; none stops lmbridge, since a reverse proxy or NAT can make them right.
func (c *Config) Warnings() []string {
	var warnings []string
	if c.Database.IsSQLite() && c.Database.MaxOpenConns > 1 {
		warnings = append(warnings, fmt.Sprintf("database.max_open_conns is %d, but SQLite has one writer: writers on "+
			"several connections wait for each other in SQLite's busy handler, which sleeps for milliseconds; 1 is "+
			"faster", c.Database.MaxOpenConns))
	}
	for _, who := range slices.Sorted(maps.Keys(c.Bridge.Permissions)) {
		if c.Bridge.Permissions[who] == DeprecatedPermissionRelay {
			warnings = append(warnings, fmt.Sprintf("bridge.permissions[%q]: the level \"relay\" is now called \"talk\" "+
				"(talk in linked rooms, no commands); \"relay\" is read as \"talk\" for now, rename it in the config "+
				"(the mautrix bridges' \"relay\" is another thing: a relay bot sending for users who are not logged in)", who))
		}
	}
	u, err := url.Parse(c.AppService.Address)
	if err != nil || u.Host == "" {
		return warnings
	}
	if isLoopback(c.AppService.Hostname) && !isLoopback(u.Hostname()) {
		warnings = append(warnings, fmt.Sprintf("appservice.address points the homeserver at %s, but appservice.hostname %s "+
			"makes lmbridge listen on loopback only; set appservice.hostname to 0.0.0.0 (or that address) unless a proxy "+
			"forwards to it", u.Host, c.AppService.Hostname))
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if port != strconv.Itoa(int(c.AppService.Port)) {
		warnings = append(warnings, fmt.Sprintf("appservice.address uses port %s but appservice.port is %d; that only works "+
			"behind a proxy that forwards one to the other", port, c.AppService.Port))
	}
	return warnings
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
