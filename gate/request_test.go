package gate

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/mailpush/mailpush"
)

// encodeQuery builds MS-ASHTTP's binary query, base64-encoded.
func encodeQuery(ver, cmd byte, deviceID []byte, policyKey []byte, deviceType string, params map[byte]string) string {
	b := []byte{ver, cmd}
	b = binary.LittleEndian.AppendUint16(b, 0x0409)
	b = append(b, byte(len(deviceID)))
	b = append(b, deviceID...)
	b = append(b, byte(len(policyKey)))
	b = append(b, policyKey...)
	b = append(b, byte(len(deviceType)))
	b = append(b, deviceType...)
	for tag, v := range params {
		b = append(b, tag, byte(len(v)))
		b = append(b, v...)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestParseQuery(t *testing.T) {
	devBin := []byte{0xf2, 0x4c, 0x11, 0x00, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0x0a, 0xbc, 0xde, 0xf0}
	enc := encodeQuery(141, 0, devBin, []byte{1, 2, 3, 4}, "WP8", map[byte]string{userTag: "alice@example.com", 1: "coll"})
	tests := []struct {
		name, raw string
		want      Query
		wantErr   string
	}{
		{"plain", "Cmd=Sync&User=alice%40example.com&DeviceId=ApplF2LLD0abcd&DeviceType=iPhone", Query{Cmd: "Sync", User: "alice@example.com", DeviceID: "APPLF2LLD0ABCD", DeviceType: "iPhone"}, ""},
		{"plain, keys without case, command parameters", "cmd=ping&deviceid=abc&devicetype=Android&SaveInSent=T&ItemId=5%3A1", Query{Cmd: "Ping", DeviceID: "ABC", DeviceType: "Android"}, ""},
		{"space around DeviceId", "cmd=ping&deviceid=%20abc%20", Query{}, "ASCII letters and digits"},
		{"dotless i", "DeviceId=gooddev%C4%B1", Query{}, "ASCII letters and digits"},
		{"long s", "DeviceId=gooddev%C5%BF", Query{}, "ASCII letters and digits"},
		{"no-break space", "DeviceId=GOODDEV01%C2%A0", Query{}, "ASCII letters and digits"},
		{"next line", "DeviceId=GOODDEV01%C2%85", Query{}, "ASCII letters and digits"},
		{"fullwidth", "DeviceId=%EF%BC%A7OODDEV01", Query{}, "ASCII letters and digits"},
		{"hyphen", "DeviceId=GOOD-DEV", Query{}, "ASCII letters and digits"},
		{"smuggled pair", "DeviceId=BLOCKED%26DeviceId%3DGOOD", Query{}, "ASCII letters and digits"},
		{"too long", "DeviceId=" + strings.Repeat("A", mailpush.MaxDeviceIDLen+1), Query{}, "ASCII letters and digits"},
		{"unknown parameter", "DeviceId=a&proxy=nginx", Query{}, "does not define"},
		{"bare key", "jAAJBAp2MTQ&DeviceId=GOODDEV01", Query{}, "without '='"},
		{"repeated without case", "DeviceId=a&deviceid=a", Query{}, "repeats"},
		{"base64", enc, Query{Cmd: "Sync", User: "alice@example.com", DeviceID: "F24C1100ABCDEF01234567890ABCDEF0", DeviceType: "WP8", ProtocolVersion: "14.1", Encoded: true}, ""},
		{"base64 escaped", strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(enc), Query{Cmd: "Sync", User: "alice@example.com", DeviceID: "F24C1100ABCDEF01234567890ABCDEF0", DeviceType: "WP8", ProtocolVersion: "14.1", Encoded: true}, ""},
		{"base64 ping, no policy key", encodeQuery(160, 18, []byte("abc"), nil, "iPad", nil), Query{Cmd: "Ping", DeviceID: "616263", DeviceType: "iPad", ProtocolVersion: "16.0", Encoded: true}, ""},
		{"empty", "", Query{}, "no DeviceId"},
		{"no DeviceId", "Cmd=Sync&User=bob", Query{}, "no DeviceId"},
		{"blank DeviceId", "Cmd=Sync&DeviceId=%20%20", Query{}, "ASCII letters and digits"},
		{"repeated DeviceId", "DeviceId=a&DeviceId=b", Query{}, "repeats"},
		{"binary DeviceId", "DeviceId=%00%01", Query{}, "ASCII letters and digits"},
		{"unknown command", "Cmd=Explode&DeviceId=a", Query{}, "command"},
		{"long query", "DeviceId=" + strings.Repeat("a", MaxQueryLen), Query{}, "longer"},
		{"not base64", "!!!notbase64", Query{}, "neither"},
		{"base64 truncated", base64.StdEncoding.EncodeToString([]byte{141, 0, 9}), Query{}, "truncated"},
		{"base64 bad length", base64.StdEncoding.EncodeToString([]byte{141, 0, 9, 4, 40, 1, 2}), Query{}, "more than 32"},
		{"base64 bad command", encodeQuery(141, 99, []byte("a"), nil, "x", nil), Query{}, "command code"},
		{"base64 bad policy key", encodeQuery(141, 0, []byte("a"), []byte{1, 2}, "x", nil), Query{}, "PolicyKey"},
		{"base64 empty DeviceId", encodeQuery(141, 0, nil, nil, "x", nil), Query{}, "no DeviceId"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseQuery(tc.raw)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(mailpush.ErrorMessage(err), tc.wantErr) || mailpush.ErrorCode(err) != mailpush.EInvalid {
					t.Fatalf("ParseQuery = %+v, %v; want an invalid_request error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseQuery = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestBasicUser(t *testing.T) {
	b := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ in, want, err string }{
		{b("CORP\\alice:s3cret:with:colons"), "CORP\\alice", ""},
		{"", "", ""},
		{"Bearer eyJ0", "", ""},
		{"Basic !!!", "", "base64"},
		{b("nopassword"), "", "user:password"},
		{b("a\x00b:pw"), "", "printable"},
		{"Basic " + strings.Repeat("A", MaxHeaderLen), "", "longer"},
	} {
		got, err := BasicUser(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("BasicUser(%.30q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("BasicUser(%.30q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if strings.Contains(got, "s3cret") {
			t.Error("the password leaked out of BasicUser")
		}
	}
}
