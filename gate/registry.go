package gate

import (
	"context"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"

	"github.com/mailpush/mailpush"
)

// Registry is the gate's device registry as admins and the MDM feed it
// (mailpush.GateRegistry). OnChange, when set, hears of every change so that
// the deciding Gate drops its cached answer: a change takes effect on the
// very next request.
type Registry struct {
	Store  mailpush.GateStore
	Hasher mailpush.AddressHasher
	Logger *slog.Logger
	// Identity puts user names in the form the gate compares (gate.identity);
	// nil means the zero configuration.
	Identity *Identity
	// ClearIDs logs DeviceIds in clear (gate.auditIdentifiers: clear);
	// otherwise as keyed-hash prefixes, like the gate's audit log.
	ClearIDs bool
	OnChange func(tenantID, deviceID string)
}

func (r *Registry) logID(tenantID, deviceID string) string {
	if r.ClearIDs {
		return deviceID
	}
	return userID(mailpush.ActiveSyncDeviceHash(r.Hasher, tenantID, deviceID))
}

var _ mailpush.GateRegistry = (*Registry)(nil)

// MaxImportRows caps one CSV import.
const MaxImportRows = 1_000_000

// SetDevice validates and stores a device; blocking or wiping it removes the
// push registrations linked to its DeviceId.
func (r *Registry) SetDevice(ctx context.Context, tenantID string, u mailpush.GateDeviceUpdate) (*mailpush.GateDevice, int, error) {
	d, removed, err := r.set(ctx, tenantID, u)
	if err != nil {
		return nil, 0, err
	}
	r.Logger.Info("gate device set", "tenant", tenantID, "deviceId", r.logID(tenantID, d.DeviceID), "state", d.State, "user", userID(d.UserHash), "removedRegistrations", removed)
	return d, removed, nil
}

func (r *Registry) set(ctx context.Context, tenantID string, u mailpush.GateDeviceUpdate) (*mailpush.GateDevice, int, error) {
	d, err := r.device(tenantID, u)
	if err != nil {
		return nil, 0, err
	}
	if err := r.Store.PutGateDevice(ctx, d); err != nil {
		return nil, 0, err
	}
	r.changed(tenantID, d.DeviceID)
	removed := 0
	if d.State.Shut() {
		removed, err = r.Store.DeleteRegistrationsByActiveSyncDevice(ctx, tenantID, mailpush.ActiveSyncDeviceHash(r.Hasher, tenantID, d.DeviceID))
		if err != nil {
			return nil, 0, err
		}
	}
	return d, removed, nil
}

func (r *Registry) device(tenantID string, u mailpush.GateDeviceUpdate) (*mailpush.GateDevice, error) {
	id := mailpush.NormalizeDeviceID(u.DeviceID)
	if !mailpush.ValidDeviceID(id) {
		return nil, mailpush.Errorf(mailpush.EInvalid, "deviceId must be 1 to %d ASCII letters and digits", mailpush.MaxDeviceIDLen)
	}
	state := mailpush.DeviceState(strings.ToLower(strings.TrimSpace(string(u.State))))
	if state == "noncompliant" {
		state = mailpush.DeviceNonCompliant
	}
	if !state.Valid() {
		return nil, mailpush.Errorf(mailpush.EInvalid, "state must be compliant, non-compliant, blocked, wiped or unknown, not %q", u.State)
	}
	ident := r.Identity
	if ident == nil {
		ident, _ = CompileIdentity(IdentityConfig{})
	}
	user, err := ident.Canonical(u.User)
	if err != nil {
		return nil, mailpush.Errorf(mailpush.EInvalid, "user: %s", mailpush.ErrorMessage(err))
	}
	dt := strings.TrimSpace(u.DeviceType)
	if len(dt) > MaxDeviceType || !printable(dt) {
		return nil, mailpush.Errorf(mailpush.EInvalid, "deviceType must be up to %d printable characters", MaxDeviceType)
	}
	d := &mailpush.GateDevice{TenantID: tenantID, DeviceID: id, DeviceType: dt, State: state}
	if user != "" {
		d.UserHash = r.Hasher.HashAddress(tenantID, user)
	} else if len(u.UserHash) > 0 {
		d.UserHash = u.UserHash
	}
	return d, nil
}

// Device returns a device by its DeviceId (in any case).
func (r *Registry) Device(ctx context.Context, tenantID, deviceID string) (*mailpush.GateDevice, error) {
	return r.Store.GateDevice(ctx, tenantID, mailpush.NormalizeDeviceID(deviceID))
}

// DeleteDevice removes a device from the registry: it becomes unregistered.
func (r *Registry) DeleteDevice(ctx context.Context, tenantID, deviceID string) error {
	id := mailpush.NormalizeDeviceID(deviceID)
	if err := r.Store.DeleteGateDevice(ctx, tenantID, id); err != nil {
		return err
	}
	r.changed(tenantID, id)
	r.Logger.Info("gate device deleted", "tenant", tenantID, "deviceId", r.logID(tenantID, id))
	return nil
}

func (r *Registry) changed(tenantID, deviceID string) {
	if r.OnChange != nil {
		r.OnChange(tenantID, deviceID)
	}
}

// Import applies a CSV file with the header deviceId,user,deviceType,state
// (columns in any order; user and deviceType may be absent).
func (r *Registry) Import(ctx context.Context, tenantID string, in io.Reader, progress func(mailpush.GateImportResult)) (mailpush.GateImportResult, error) {
	var res mailpush.GateImportResult
	cr := csv.NewReader(in)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return res, mailpush.Errorf(mailpush.EInvalid, "the CSV is empty: its first line must be the header deviceId,user,deviceType,state")
	}
	if err != nil {
		return res, csvError(err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	for _, need := range []string{"deviceid", "state"} {
		if _, ok := col[need]; !ok {
			return res, mailpush.Errorf(mailpush.EInvalid, "the CSV header has no %s column: it must be deviceId,user,deviceType,state", need)
		}
	}
	field := func(rec []string, name string) string {
		if i, ok := col[name]; ok && i < len(rec) {
			return rec[i]
		}
		return ""
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			r.Logger.Info("gate devices imported", "tenant", tenantID, "rows", res.Rows, "stored", res.Stored, "removedRegistrations", res.Removed)
			return res, nil
		}
		if err != nil {
			return res, csvError(err)
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		res.Rows++
		line, _ := cr.FieldPos(0)
		if res.Rows > MaxImportRows {
			return res, mailpush.Errorf(mailpush.ETooLarge, "line %d: an import holds at most %d devices; split the file", line, MaxImportRows)
		}
		_, removed, err := r.set(ctx, tenantID, mailpush.GateDeviceUpdate{
			DeviceID: field(rec, "deviceid"), User: field(rec, "user"), DeviceType: field(rec, "devicetype"), State: mailpush.DeviceState(field(rec, "state")),
		})
		if err != nil {
			if mailpush.ErrorCode(err) == mailpush.EInvalid {
				return res, mailpush.Errorf(mailpush.EInvalid, "line %d: %s", line, mailpush.ErrorMessage(err))
			}
			return res, err
		}
		res.Stored++
		res.Removed += removed
		if progress != nil {
			progress(res)
		}
	}
}

func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return mailpush.Errorf(mailpush.EInvalid, "line %d of the CSV is malformed: %v", pe.Line, pe.Err)
	}
	return mailpush.WrapError(mailpush.EInvalid, "the CSV could not be read", err)
}

// userID is the printable form of a user hash for logs.
func userID(h []byte) string {
	if h == nil {
		return ""
	}
	return hex.EncodeToString(h[:min(len(h), 6)])
}
