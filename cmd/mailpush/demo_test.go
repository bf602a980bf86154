package main

import (
	"context"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoPushesArrive runs the demo command's code: the real server, the
// fake Exchange and APNs, the demo device; pushes must arrive and be
// printed, with the mail's subject, within a deadline.
func TestDemoPushesArrive(t *testing.T) {
	var out syncBuffer
	d, err := startDemo(context.Background(), "127.0.0.1:0", 50*time.Millisecond, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	dir := d.dir
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(out.String(), "push to device") < 3 {
		if time.Now().After(deadline) {
			d.Close()
			t.Fatalf("fewer than 3 pushes printed within a minute:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	s := out.String()
	for _, want := range []string{"mailpush demo: server http://127.0.0.1:", "admin console:", "mail 2 delivered"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	// A push line with a badge and a mail's subject. Mails 50 ms apart may
	// reach Exchange's same notification (it batches), and the badge is read
	// when the event is resolved, after later mail may have come: the first
	// push may say badge 2 with either subject.
	if !regexp.MustCompile(`push to device \S+: badge [1-9][0-9]*, alert .*Demo mail [0-9]+`).MatchString(s) {
		t.Errorf("demo output lacks a push with a badge and a demo mail's subject:\n%s", s)
	}
	if d.apple.Accepted() < 3 {
		t.Errorf("the fake APNs accepted %d pushes", d.apple.Accepted())
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the demo left its state in %s", dir)
	}
	// The command itself: stray arguments and bad intervals are refused.
	if err := run(context.Background(), []string{"demo", "now"}, io.Discard, io.Discard, nil); err == nil || !strings.Contains(err.Error(), `unexpected argument "now"`) {
		t.Errorf("demo now: %v", err)
	}
	if err := run(context.Background(), []string{"demo", "--every", "1ns"}, io.Discard, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("demo --every 1ns: %v", err)
	}
}
