// Command lmbridge-demo starts a local stack on loopback: a real homeserver (Dendrite by default) with lmbridge
// registered on it and running, and a demo user with a password. It prints what a Matrix client needs to log in and
// keeps everything running until Ctrl-C, then stops the bridge and the homeserver by PID.
//
// scripts/demo.sh installs what it needs and runs it; run it directly with
//
//	LMBRIDGE_TEST_DENDRITE_BIN=... lmbridge-demo -lmbridge ./lmbridge -dir .cache/demo
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/internal/testca"
	"github.com/lmbridge/lmbridge/internal/tesths"
)

// markerFile marks a directory as the demo's own, so that wiping it on the next run can never remove anything else.
const markerFile = ".lmbridge-demo"

const (
	setupTimeout    = 3 * time.Minute
	bridgeReadyWait = time.Minute
	botJoinWait     = 20 * time.Second
	botAnswerWait   = 15 * time.Second
	stopGrace       = 15 * time.Second
)

// errBotAbsent means the bridge bot did not answer the demo room's invite.
var errBotAbsent = errors.New("the bridge bot did not join")

type options struct {
	lmbridge   string
	dir        string
	homeserver string
	user       string
	check      bool
	// mimi has the bridge talk to a second MIMI provider instead of a second LM server.
	mimi bool
}

func main() {
	var opts options
	flag.StringVar(&opts.lmbridge, "lmbridge", "lmbridge", "the lmbridge binary")
	flag.StringVar(&opts.dir, "dir", ".cache/demo", "the demo's working directory; wiped at start")
	flag.StringVar(&opts.homeserver, "homeserver", string(tesths.Dendrite), "dendrite or synapse")
	flag.StringVar(&opts.user, "user", "demo", "localpart of the demo user")
	flag.BoolVar(&opts.check, "check", false, "set the stack up, check it, stop it and exit (for CI)")
	flag.BoolVar(&opts.mimi, "mimi", false, "link the demo room to a MIMI room and talk to a user of a second MIMI provider")
	flag.Parse()

	// Info and up: the homeserver harness and the Matrix client log every request at debug.
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05", NoColor: !isTerminal(os.Stderr)}).
		Level(zerolog.InfoLevel).With().Timestamp().Logger()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = log.WithContext(ctx)
	if err := runDemo(ctx, opts, os.Stdout); err != nil {
		log.Error().Err(err).Msg("Demo failed")
		os.Exit(1)
	}
}

// stack is what runDemo started, stopped in reverse order.
type stack struct {
	hs     *tesths.Homeserver
	bridge *bridgeProcess
	peer   *lmPeer
	mimi   *mimiPeer
}

func (s *stack) stop(ctx context.Context) {
	log := zerolog.Ctx(ctx)
	if s.mimi != nil {
		if err := s.mimi.stop(); err != nil {
			log.Warn().Err(err).Msg("The demo MIMI provider did not stop cleanly")
		}
	}
	if s.peer != nil {
		if err := s.peer.stop(); err != nil {
			log.Warn().Err(err).Msg("The demo LM server did not stop cleanly")
		}
	}
	if s.bridge != nil {
		pid := s.bridge.cmd.Process.Pid
		if err := s.bridge.stop(stopGrace); err != nil {
			log.Warn().Err(err).Int("pid", pid).Msg("lmbridge did not stop cleanly")
		} else {
			log.Info().Int("pid", pid).Msg("Stopped lmbridge")
		}
	}
	if s.hs != nil {
		if err := s.hs.Stop(); err != nil {
			log.Warn().Err(err).Msg("Homeserver did not stop cleanly")
		} else {
			log.Info().Str("homeserver", string(s.hs.Kind)).Msg("Stopped the homeserver")
		}
	}
}

func runDemo(ctx context.Context, opts options, out io.Writer) error {
	log := zerolog.Ctx(ctx)
	kind := tesths.Kind(opts.homeserver)
	bin, err := filepath.Abs(opts.lmbridge)
	if err != nil {
		return fmt.Errorf("failed to resolve -lmbridge: %w", err)
	}
	dir, err := prepareDir(opts.dir)
	if err != nil {
		return err
	}
	bridgeDir, hsDir := filepath.Join(dir, "lmbridge"), filepath.Join(dir, string(kind))
	if err := os.Mkdir(bridgeDir, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", bridgeDir, err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	hsPort, asPort, lmPort, mimiPort := ports[0], ports[1], ports[2], ports[3]
	serverName := tesths.DefaultServerName

	setupCtx, cancel := context.WithTimeout(ctx, setupTimeout)
	defer cancel()

	// The operator's flow: -e, edit, -g.
	if _, err := runLmbridge(setupCtx, bin, bridgeDir, "-e", "-c", "config.yaml"); err != nil {
		return err
	}
	lmName := "127.0.0.1:" + strconv.Itoa(lmPort)
	err = editConfig(filepath.Join(bridgeDir, "config.yaml"), []setting{
		{"homeserver.address", "http://127.0.0.1:" + strconv.Itoa(hsPort)},
		{"homeserver.domain", serverName},
		{"appservice.address", "http://127.0.0.1:" + strconv.Itoa(asPort)},
		{"appservice.hostname", "127.0.0.1"},
		{"appservice.port", asPort},
		{"database.uri", "file:" + filepath.Join(bridgeDir, "lmbridge.db") + "?_txlock=immediate"},
		{"lm.server_name", lmName},
		{"lm.listen", lmName},
		{"lm.allow_plain_http", true},
		{"lm.allow_http_peers", true},
		// The demo's LM server is on loopback, which the default blocklist keeps federation away from.
		{"lm.ip_range_blocklist", []string{}},
		{"lm.signing_key_path", filepath.Join(bridgeDir, "lmbridge.signing.key")},
		{"bridge.permissions", map[string]string{serverName: "admin"}},
		{"logging.min_level", "debug"},
		{"logging.format", "pretty"},
	})
	if err != nil {
		return err
	}
	var s stack
	defer s.stop(ctx)
	if opts.mimi {
		// Two MIMI providers on loopback, with certificates of a CA made for this run: lmbridge's and the demo's own.
		ca, err := testca.New()
		if err != nil {
			return err
		}
		files, err := ca.WriteFiles(bridgeDir, bridgeMIMIDomain)
		if err != nil {
			return err
		}
		peerDir := filepath.Join(dir, "mimi-peer")
		if err := os.Mkdir(peerDir, 0o700); err != nil {
			return fmt.Errorf("failed to create %s: %w", peerDir, err)
		}
		peerCtx := log.With().Str("component", "demo MIMI provider").Logger().WithContext(ctx)
		if s.mimi, err = startMIMIPeer(peerCtx, peerDir, ca, mimiPort); err != nil {
			return err
		}
		err = editConfig(filepath.Join(bridgeDir, "config.yaml"), []setting{
			{"mimi.domain", bridgeMIMIDomain},
			{"mimi.listen", "127.0.0.1:" + strconv.Itoa(mimiPort)},
			{"mimi.tls_cert", files.Cert},
			{"mimi.tls_key", files.Key},
			{"mimi.tls_ca", files.CA},
			{"mimi.peers", map[string]string{peerMIMIDomain: "127.0.0.1:" + strconv.Itoa(s.mimi.port())}},
		})
		if err != nil {
			return err
		}
		log.Info().Str("user", s.mimi.user).Msg("Started a second MIMI provider")
	}
	if _, err := runLmbridge(setupCtx, bin, bridgeDir, "-g", "-c", "config.yaml", "-r", "registration.yaml"); err != nil {
		return err
	}
	registration, err := os.ReadFile(filepath.Join(bridgeDir, "registration.yaml"))
	if err != nil {
		return fmt.Errorf("failed to read the registration: %w", err)
	}
	log.Info().Str("dir", bridgeDir).Msg("Wrote lmbridge's config and registration")

	log.Info().Str("homeserver", string(kind)).Int("port", hsPort).Msg("Starting the homeserver")
	s.hs, err = tesths.Start(setupCtx, kind, hsDir, tesths.Options{
		ServerName:    serverName,
		Registrations: [][]byte{registration},
		Port:          hsPort,
	})
	if err != nil {
		return fmt.Errorf("failed to start %s: %w", kind, err)
	}
	log.Info().Str("url", s.hs.URL).Msg("Homeserver is up")

	bridgeLog := filepath.Join(bridgeDir, "lmbridge.log")
	s.bridge, err = startBridge(bin, bridgeDir, bridgeLog, "-c", "config.yaml", "-r", "registration.yaml")
	if err != nil {
		return err
	}
	readyCtx, cancelReady := context.WithTimeout(setupCtx, bridgeReadyWait)
	err = s.bridge.waitReady(readyCtx, "http://127.0.0.1:"+strconv.Itoa(asPort)+"/_matrix/mau/ready")
	cancelReady()
	if err != nil {
		return err
	}
	log.Info().Int("pid", s.bridge.cmd.Process.Pid).Msg("lmbridge is up")
	if err := s.hs.Ping(setupCtx, "lmbridge"); err != nil {
		return err
	}

	password, err := randomPassword()
	if err != nil {
		return err
	}
	if _, err := s.hs.RegisterUser(setupCtx, opts.user, password, false); err != nil {
		return err
	}
	// Log in the way a client would, with the printed credentials, to prove they work.
	client, err := passwordLogin(setupCtx, s.hs.URL, opts.user, password)
	if err != nil {
		return err
	}
	bot := id.NewUserID("lmbridge", serverName)
	botJoined, roomID, err := inviteBot(setupCtx, client, bot)
	if err != nil {
		return err
	}
	if botJoined {
		log.Info().Stringer("room_id", roomID).Msg("The bridge bot joined the demo room")
	} else if opts.check {
		return fmt.Errorf("%w: %s did not join %s within %s", errBotAbsent, bot, roomID, botJoinWait)
	} else {
		log.Warn().Stringer("room_id", roomID).Dur("waited", botJoinWait).
			Msg("The bridge bot has not joined the demo room yet")
	}

	// What a Matrix user sees of the LM side today; the demo grows with the bridge.
	lmStatus := "not answering yet"
	if name, ok := lmKeyServer(setupCtx, lmName); ok {
		lmStatus = "serving its keys as " + name
	}
	linkAnswer, linkCommand := "", "!lm link"
	if opts.mimi {
		linkCommand = "!lm mimi link"
	}
	if botJoined {
		if linkAnswer, err = askBot(setupCtx, client, roomID, bot, linkCommand, botAnswerWait); err != nil {
			return err
		}
		if linkAnswer == "" {
			log.Warn().Str("command", linkCommand).Msg("The bridge bot did not answer")
		}
	}
	var mimiGhost id.UserID
	if opts.mimi && strings.HasPrefix(linkAnswer, "Linked") {
		mimiGhost, err = talkToMIMI(setupCtx, client, roomID, bot, s.mimi)
		switch {
		case err == nil:
			log.Info().Stringer("ghost", mimiGhost).Msg("The Matrix room and the MIMI room talked both ways")
		case opts.check:
			return err
		default:
			log.Warn().Err(err).Msg("The conversation with the MIMI side did not work")
		}
	}
	// Once the room is linked, a second LM server (another provider, in this process) joins the conversation.
	var ghost id.UserID
	if !opts.mimi && strings.HasPrefix(linkAnswer, "Linked") {
		peerDir := filepath.Join(dir, "lm-peer")
		if err := os.Mkdir(peerDir, 0o700); err != nil {
			return fmt.Errorf("failed to create %s: %w", peerDir, err)
		}
		peerCtx := log.With().Str("component", "demo LM server").Logger().WithContext(ctx)
		if s.peer, err = startPeer(peerCtx, peerDir); err != nil {
			return err
		}
		log.Info().Str("user", s.peer.user).Msg("Started a second LM server; inviting its user")
		ghost, err = talkToLM(setupCtx, client, roomID, bot, s.peer)
		switch {
		case err == nil:
			log.Info().Stringer("ghost", ghost).Msg("The Matrix room and the LM room talked both ways")
		case opts.check:
			return err
		default:
			log.Warn().Err(err).Msg("The conversation with the LM side did not work")
		}
	}

	printBanner(out, banner{
		hs: s.hs, user: client.UserID, password: password, bot: bot, botJoined: botJoined,
		lmName: lmName, lmStatus: lmStatus, linkAnswer: linkAnswer, dir: dir, bridgeLog: bridgeLog,
		peer: s.peer, ghost: ghost, mimi: s.mimi, mimiGhost: mimiGhost, linkCommand: linkCommand,
	})
	if opts.check {
		log.Info().Msg("Check passed; stopping")
		return nil
	}
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nStopping…")
		return nil
	case <-s.bridge.done:
		return fmt.Errorf("lmbridge exited (%v); last lines of %s:\n%s", s.bridge.waitErr, bridgeLog, tail(bridgeLog))
	}
}

// prepareDir empties the demo directory of an earlier run, refusing to touch a directory it did not create.
func prepareDir(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("failed to resolve -dir: %w", err)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
			return "", fmt.Errorf("%s is not empty and was not made by the demo; pick another -dir", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return "", fmt.Errorf("failed to clear %s: %w", dir, err)
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("failed to read %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("failed to create %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerFile), nil, 0o600); err != nil {
		return "", fmt.Errorf("failed to mark %s: %w", dir, err)
	}
	return dir, nil
}

func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for len(ports) < n {
		port, err := tesths.FreePort()
		if err != nil {
			return nil, err
		}
		// The kernel may hand the same ephemeral port out twice in a row.
		dup := false
		for _, p := range ports {
			dup = dup || p == port
		}
		if !dup {
			ports = append(ports, port)
		}
	}
	return ports, nil
}

func randomPassword() (string, error) {
	buf := make([]byte, 9)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("failed to generate a password: %w", err)
	}
	return hex.EncodeToString(buf), nil
}

func passwordLogin(ctx context.Context, url, user, password string) (*mautrix.Client, error) {
	client, err := mautrix.NewClient(url, "", "")
	if err != nil {
		return nil, fmt.Errorf("failed to create client: %w", err)
	}
	_, err = client.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user},
		Password:                 password,
		InitialDeviceDisplayName: "lmbridge demo check",
		StoreCredentials:         true,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to log in as %s with the new password: %w", user, err)
	}
	return client, nil
}

// inviteBot creates a room as the demo user, invites the bridge bot and waits a little for it to join.
func inviteBot(ctx context.Context, client *mautrix.Client, bot id.UserID) (bool, id.RoomID, error) {
	resp, err := client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Name:   "lmbridge demo",
		Topic:  "Created by scripts/demo.sh; the bridge bot is invited.",
		Preset: "private_chat",
		Invite: []id.UserID{bot},
		// The bridge links only rooms where its bot may do what it does there (m.bridge, invites, moderation).
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{client.UserID: 100, bot: 100}},
	})
	if err != nil {
		return false, "", fmt.Errorf("failed to create the demo room: %w", err)
	}
	deadline := time.Now().Add(botJoinWait)
	for time.Now().Before(deadline) {
		members, err := client.JoinedMembers(ctx, resp.RoomID)
		if err != nil {
			return false, resp.RoomID, fmt.Errorf("failed to list the demo room's members: %w", err)
		}
		if _, ok := members.Joined[bot]; ok {
			_, err := client.SendMessageEvent(ctx, resp.RoomID, event.EventMessage, &event.MessageEventContent{
				MsgType: event.MsgNotice,
				Body:    "Hello from the lmbridge demo.",
			})
			return true, resp.RoomID, err
		}
		select {
		case <-ctx.Done():
			return false, resp.RoomID, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	return false, resp.RoomID, nil
}

// banner is what the demo prints once the stack is up.
type banner struct {
	hs         *tesths.Homeserver
	user       id.UserID
	password   string
	bot        id.UserID
	botJoined  bool
	lmName     string
	lmStatus   string
	linkAnswer string
	dir        string
	bridgeLog  string
	peer       *lmPeer
	ghost      id.UserID
	// mimi and mimiGhost are the MIMI provider's user and their ghost, in the MIMI mode.
	mimi        *mimiPeer
	mimiGhost   id.UserID
	linkCommand string
}

func printBanner(out io.Writer, b banner) {
	botNote := "it joined the room \"lmbridge demo\""
	if !b.botJoined {
		botNote = "invited to the room \"lmbridge demo\"; it has not joined yet"
	}
	link, hint, lmUser := "no answer: this build's bridge does not handle commands yet", "", ""
	if b.linkAnswer != "" {
		link, hint = b.linkAnswer, "In the room \"lmbridge demo\", \"!lm help\" lists the bridge's commands.\n\n"
	}
	if b.peer != nil && b.ghost != "" {
		lmUser = fmt.Sprintf("  LM user          %s   (on a second LM server in the demo; he answers every message)\n"+
			"                   appears in the Matrix room as %s\n", b.peer.user, b.ghost)
	}
	if b.mimi != nil && b.mimiGhost != "" {
		lmUser = fmt.Sprintf("  MIMI user        %s   (on a second MIMI provider in the demo; he answers every message)\n"+
			"                   appears in the Matrix room as %s\n", b.mimi.user, b.mimiGhost)
	}
	command := fmt.Sprintf("%-16q", b.linkCommand)
	fmt.Fprintf(out, `
lmbridge demo is running on loopback. Press Ctrl-C to stop it.

  Homeserver URL   %[1]s   (%[2]s %[3]s; the server name does not resolve, give clients this URL)
  User             %[4]s
  Password         %[5]s
  Bridge bot       %[6]s   (%[7]s)
  LM server        http://%[8]s   (lmbridge as a Linearized Matrix server: %[13]s)
  %[17]s %[14]s
%[15]s
%[16]sLog in with any Matrix client that lets you set the homeserver URL (Element: "Edit" next to the homeserver,
then %[1]s), or check from a shell:

  curl -s -X POST %[1]s/_matrix/client/v3/login \
    -d '{"type":"m.login.password","identifier":{"type":"m.id.user","user":"%[9]s"},"password":"%[5]s"}'

Files in %[10]s: lmbridge's config.yaml and registration.yaml, the homeserver's data.
Logs: %[11]s and %[12]s
`, b.hs.URL, b.hs.Kind, b.hs.ServerName, b.user, b.password, b.bot, botNote, b.lmName, b.user.Localpart(), b.dir,
		b.bridgeLog, b.hs.LogPath, b.lmStatus, link, lmUser, hint, command)
}

func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
