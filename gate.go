package mailpush

import (
	"context"
	"io"
	"strings"
	"time"
)

// DeviceState is what the MDM (or an admin) says about an ActiveSync device.
type DeviceState string

const (
	DeviceCompliant    DeviceState = "compliant"
	DeviceNonCompliant DeviceState = "non-compliant"
	DeviceBlocked      DeviceState = "blocked"
	DeviceWiped        DeviceState = "wiped"
	DeviceUnknown      DeviceState = "unknown"
)

// Valid reports whether s is one of the five states.
func (s DeviceState) Valid() bool {
	switch s {
	case DeviceCompliant, DeviceNonCompliant, DeviceBlocked, DeviceWiped, DeviceUnknown:
		return true
	}
	return false
}

// Shut reports whether the state closes the device out for good: a blocked
// or wiped device is denied by the gate and loses its push registrations.
func (s DeviceState) Shut() bool { return s == DeviceBlocked || s == DeviceWiped }

// MaxDeviceIDLen caps an ActiveSync DeviceId (MS-ASHTTP allows 32 characters;
// some clients send longer ones, none sends more than this).
const MaxDeviceIDLen = 128

// NormalizeDeviceID is the form in which DeviceIds are stored and compared:
// MDMs report them with arbitrary case and stray spaces, Exchange compares
// them without case. Only ASCII spaces and tabs are trimmed and only ASCII
// letters change case: a Unicode case mapping or space class would let a
// look-alike (a dotless ı, a no-break space) match a registered device.
func NormalizeDeviceID(id string) string {
	return asciiUpper(strings.Trim(id, " \t"))
}

func asciiUpper(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'a' <= c && c <= 'z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'a' <= b[j] && b[j] <= 'z' {
					b[j] -= 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// ValidDeviceID reports whether a DeviceId is 1 to MaxDeviceIDLen ASCII
// letters and digits: MS-ASHTTP forbids commas and special characters, and
// the base64 query form's binary DeviceIds are written as hexadecimal.
func ValidDeviceID(id string) bool {
	if id == "" || len(id) > MaxDeviceIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// ActiveSyncDeviceHash is the keyed hash under which a push registration
// remembers the ActiveSync DeviceId of its device, so that blocking or wiping
// that device at the gate also removes its pushes.
func ActiveSyncDeviceHash(h AddressHasher, tenantID, deviceID string) []byte {
	return h.HashAddress(tenantID, "activesync-device\x00"+NormalizeDeviceID(deviceID))
}

// GateDevice is one ActiveSync device in a tenant's gate registry. The user
// is kept only as a keyed hash (AddressHasher), like mailbox addresses.
type GateDevice struct {
	TenantID   string
	DeviceID   string // normalised (NormalizeDeviceID)
	UserHash   []byte // keyed hash of the user; nil when the MDM gave none
	DeviceType string
	State      DeviceState
	LastSeen   time.Time // last request seen at the gate (zero: never)
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// GateDeviceUpdate is what the MDM or an admin reports about a device.
type GateDeviceUpdate struct {
	DeviceID string
	User     string // in clear only on its way in; hashed before it is stored
	// UserHash keeps a stored user when User is empty: the admin console
	// changes a device's state knowing only the user's hash.
	UserHash   []byte
	DeviceType string
	State      DeviceState
}

// GateImportResult sums up a bulk import.
type GateImportResult struct {
	Rows    int `json:"rows"`                 // data rows read
	Stored  int `json:"stored"`               // devices created or updated
	Removed int `json:"removedRegistrations"` // push registrations removed by blocks and wipes
}

// GateRegistry is the gate's device registry as the admin API and the import
// command use it. gate.Service implements it: it normalises and hashes, makes
// a change visible to the very next request, and removes the push
// registrations of blocked and wiped devices.
type GateRegistry interface {
	// SetDevice creates or updates a device and returns it with how many push
	// registrations a block or wipe removed.
	SetDevice(ctx context.Context, tenantID string, u GateDeviceUpdate) (*GateDevice, int, error)
	Device(ctx context.Context, tenantID, deviceID string) (*GateDevice, error)
	DeleteDevice(ctx context.Context, tenantID, deviceID string) error
	// Import reads CSV (header: deviceId,user,deviceType,state) and applies
	// every row; progress, when not nil, is called after each row. A
	// malformed row stops the import with an EInvalid error naming the line;
	// the rows before it stay applied.
	Import(ctx context.Context, tenantID string, csv io.Reader, progress func(GateImportResult)) (GateImportResult, error)
}

// GateRule is one of a tenant's ordered gate rules as it is stored and
// edited (the admin console). It matches when every field that is set
// matches (a list when any entry does). Users are kept only as keyed hashes
// (AddressHasher of their canonical form): a rule never puts an address on
// disk.
type GateRule struct {
	Name        string   `json:"name"`
	Action      string   `json:"action"` // allow or deny
	UserHashes  [][]byte `json:"userHashes,omitempty"`
	DeviceIDs   []string `json:"deviceIds,omitempty"`
	DeviceTypes []string `json:"deviceTypes,omitempty"`
	UserAgent   string   `json:"userAgent,omitempty"` // RE2, unanchored
	Commands    []string `json:"commands,omitempty"`
	Networks    []string `json:"networks,omitempty"` // CIDR
}

// GateRuleStore keeps each tenant's edited gate rules, in order, as one
// versioned list: the configuration's gate.rules only seed it (the first
// start stores them), after which the console's edits are what every node
// applies.
type GateRuleStore interface {
	// GateRules returns the tenant's rules and their version; ENotFound
	// when none were ever stored.
	GateRules(ctx context.Context, tenantID string) ([]GateRule, int64, error)
	// PutGateRules replaces the tenant's rules if their stored version is
	// still version (0: none stored yet) and returns the new version; a
	// concurrent change makes it fail with EConflict and change nothing.
	PutGateRules(ctx context.Context, tenantID string, rules []GateRule, version int64) (int64, error)
}

// GateDecisionRecord is one gate decision as the admin console lists it.
// Device is the DeviceId as the gate's audit log shows it (a keyed-hash
// prefix unless gate.auditIdentifiers is clear), User a keyed-hash prefix.
type GateDecisionRecord struct {
	At         time.Time
	Device     string
	DeviceType string
	User       string
	Rule       string
	Allow      bool
	Reason     string
}
