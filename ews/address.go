package ews

// KnownAddress returns the address of a mailbox that this process holds in
// memory: from the callback URL of its last notification or subscription
// (sealed and service mode; device-subscribed URLs carry none). After a
// restart a mailbox's address is known again once its next notification
// arrives (within StatusFrequency). The EWS to Graph cut-over asks it
// (graph.AddressBook): mailpush keeps only the address's keyed hash.
func (s *Source) KnownAddress(mailboxID string) (string, bool) {
	c, ok := s.init().creds.get(mailboxID)
	if !ok || c.address == "" {
		return "", false
	}
	return c.address, true
}
