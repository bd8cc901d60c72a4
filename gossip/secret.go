package gossip

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// gossipKey derives memberlist's AES-256-GCM key from the cluster secret.
// HKDF with a purpose label means the raw secret never keys anything
// directly, and other purposes (if ever needed) get independent keys.
func gossipKey(secret []byte) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, secret, []byte("weft cluster secret"), "weft gossip aes-256-gcm v1", 32)
	if err != nil {
		return nil, fmt.Errorf("derive gossip key: %w", err)
	}
	return k, nil
}

// NewSecret returns a fresh random cluster secret in the printable form
// that password files and WEFT_PASSWORD hold.
func NewSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("new cluster secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
