package federation

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"maunium.net/go/mautrix/federation"
)

// SigningKey is our ed25519 server key; mautrix's type already reads and writes Synapse's .signing.key format.
type SigningKey = federation.SigningKey

// LoadOrGenerateSigningKey reads the Synapse-format signing key at path ("ed25519 <id> <unpadded base64 seed>"), or
// creates one there if the file does not exist. The file is written 0600 through a temporary file so that a crash
// cannot leave a half-written key behind.
func LoadOrGenerateSigningKey(path string) (*SigningKey, error) {
	key, err := loadSigningKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err = os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create signing key directory: %w", err)
	}
	key = federation.GenerateSigningKey()
	err = writeFileAtomic(path, []byte(key.SynapseString()+"\n"), 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another process created it between our read and our write: its key wins.
		return loadSigningKey(path)
	} else if err != nil {
		return nil, fmt.Errorf("failed to store new signing key: %w", err)
	}
	return key, nil
}

func loadSigningKey(path string) (*SigningKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("failed to read signing key: %w", err)
	}
	// Synapse allows several keys, one per line; the first one signs.
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	key, err := federation.ParseSynapseKey(strings.TrimSpace(line))
	if err != nil {
		return nil, fmt.Errorf("failed to parse signing key %s: %w", path, err)
	}
	return key, nil
}

func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err = tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	// Link rather than rename, so that two processes starting together cannot each install a different key.
	if err = os.Link(tmp.Name(), path); err != nil {
		return err
	}
	return nil
}
